"""Notifications of the database, fanned out to the subscriptions of this process."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from gateway.storage.listener import Listening

logger = logging.getLogger(__name__)

BALANCE_CHANNEL = "gateway_balance"  # payload: "<subscription id>:<usage meter id>"
ALERT_CHANNEL = "gateway_alert"  # payload: "<customer id>:<usage alert event id>"

BalanceKey = tuple[uuid.UUID, uuid.UUID]


class Wake:
    """A subscription's doorbell: ``ring()`` from the hub, ``wait()`` in the feed.

    Rings while nobody waits are not lost (the flag stays set) and many rings before a wait
    are one: that is the coalescing of a burst. Alert event ids are kept in ``pending``
    (bounded by the feed, which drops a client that lets it grow)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self.pending: list[uuid.UUID] = []

    def ring(self, event_id: uuid.UUID | None = None) -> None:
        if event_id is not None:
            self.pending.append(event_id)
        self._event.set()

    def clear(self) -> None:
        self._event.clear()

    async def wait(self, seconds: float | None) -> bool:
        """True when rung, False when ``seconds`` passed first (None: no limit)."""
        try:
            async with asyncio.timeout(seconds):
                await self._event.wait()
        except TimeoutError:
            return False
        return True


class Hub:
    """Who watches what on this process."""

    def __init__(self) -> None:
        self._balances: dict[BalanceKey, set[Wake]] = {}
        self._alerts: dict[uuid.UUID | None, set[Wake]] = {}  # None: every customer's
        self._listener: Listening | None = None
        self._listening: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.notifications = 0  # received (for tests and the benchmark)

    def attach(self, listener: Listening) -> None:
        """Use ``listener``. A channel is LISTENed to from its first subscription on: a
        process nobody subscribes to costs the writers nothing (PostgreSQL signals only the
        backends that listen), and the hot path pays for fan-out only where it is used."""
        self._listener = listener
        listener.on_reconnect(self.ring_all)

    def _ensure_listening(self, channel: str) -> None:
        if channel in self._listening or self._listener is None:
            return
        self._listening.add(channel)
        callback = self._on_balance if channel == BALANCE_CHANNEL else self._on_alert
        task = asyncio.create_task(self._listen(self._listener, channel, callback))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _listen(self, listener: Listening, channel: str, callback: Any) -> None:
        await listener.listen(channel, callback)
        # A change committed before the LISTEN took effect was not announced: read again.
        self.ring_all()

    @property
    def watching(self) -> int:
        return sum(len(w) for w in self._balances.values()) + sum(
            len(w) for w in self._alerts.values()
        )

    @contextmanager
    def balance(self, key: BalanceKey) -> Iterator[Wake]:
        wake = Wake()
        self._ensure_listening(BALANCE_CHANNEL)
        self._balances.setdefault(key, set()).add(wake)
        try:
            yield wake
        finally:
            self._forget(self._balances, key, wake)

    @contextmanager
    def alerts(self, customer_id: uuid.UUID | None) -> Iterator[Wake]:
        wake = Wake()
        self._ensure_listening(ALERT_CHANNEL)
        self._alerts.setdefault(customer_id, set()).add(wake)
        try:
            yield wake
        finally:
            self._forget(self._alerts, customer_id, wake)

    def ring_all(self) -> None:
        """After a reconnection: every balance is read again (alert events sent while nobody
        listened are not replayed; their webhooks deliver them)."""
        for wakes in self._balances.values():
            for wake in wakes:
                wake.ring()

    def _on_balance(self, payload: str) -> None:
        self.notifications += 1
        key = _pair(payload)
        if key is None:
            return
        for wake in self._balances.get(key, ()):
            wake.ring()

    def _on_alert(self, payload: str) -> None:
        self.notifications += 1
        pair = _pair(payload)
        if pair is None:
            return
        customer_id, event_id = pair
        for wake in (*self._alerts.get(customer_id, ()), *self._alerts.get(None, ())):
            wake.ring(event_id)

    @staticmethod
    def _forget(table: dict[Any, set[Wake]], key: Any, wake: Wake) -> None:
        wakes = table.get(key)
        if wakes is not None:
            wakes.discard(wake)
            if not wakes:
                del table[key]


def _pair(payload: str) -> tuple[uuid.UUID, uuid.UUID] | None:
    first, _, second = payload.partition(":")
    try:
        return uuid.UUID(first), uuid.UUID(second)
    except ValueError:
        logger.warning("live: ignoring a malformed notification %r", payload[:100])
        return None
