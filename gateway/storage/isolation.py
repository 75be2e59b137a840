"""Isolation of hot or stuck keys: at most N holders per key in this process.

A usage write locks its (subscription, meter) balance row. Should that row stay locked (a
long transaction elsewhere, a stuck client), every write for it waits on the lock while holding
a pooled connection; without a bound, writes for one subscription could take the whole pool
and stall every other customer. ``KeyedLimiter`` lets at most ``limit`` writes per key hold a
connection; the others wait here, holding nothing, up to ``timeout`` seconds, then fail with
``DatabaseUnavailable`` (HTTP 503), nothing of them sent. The lock wait of the ones in flight is
bounded by PostgreSQL's ``lock_timeout``. Throughput on a hot key is unaffected: its writes are
serialised by the row lock anyway, and ``limit`` >= 2 keeps the next one queued at the server.

Hand-written rather than a library: it is an ``asyncio.Semaphore`` per key, created on demand
and dropped when its last user leaves (so the table holds only keys in use).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

from gateway.storage.db import DatabaseUnavailable


class _Slot:
    __slots__ = ("key", "semaphore", "users")

    def __init__(self, key: str, limit: int) -> None:
        self.key = key
        self.semaphore = asyncio.Semaphore(limit)
        self.users = 0


class KeyedLimiter:
    """At most ``limit`` concurrent holders per key; waiters give up after ``timeout`` s."""

    def __init__(self, limit: int, *, timeout: float | None) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self.timeout = timeout
        self._slots: dict[str, _Slot] = {}

    def in_use(self) -> int:
        """Keys with a holder or a waiter (for tests and metrics)."""
        return len(self._slots)

    @asynccontextmanager
    async def hold(self, keys: Iterable[str]) -> AsyncIterator[None]:
        """Hold every key of ``keys`` (taken in sorted order, so that two holders of
        overlapping sets cannot deadlock); raises ``DatabaseUnavailable`` after ``timeout``."""
        entered: list[_Slot] = []
        held: list[_Slot] = []
        try:
            try:
                async with asyncio.timeout(self.timeout):
                    for key in sorted(set(keys)):
                        slot = self._slots.get(key)
                        if slot is None:
                            slot = self._slots[key] = _Slot(key, self.limit)
                        slot.users += 1
                        entered.append(slot)
                        await slot.semaphore.acquire()
                        held.append(slot)
            except TimeoutError:
                raise DatabaseUnavailable(
                    "too many writes in flight for one subscription and meter"
                ) from None
            yield
        finally:
            for slot in held:
                slot.semaphore.release()
            for slot in entered:
                slot.users -= 1
                if slot.users == 0:
                    del self._slots[slot.key]
