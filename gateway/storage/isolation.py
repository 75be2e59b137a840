"""Isolation of hot or stuck keys: at most N holders per key in this process.

A usage write locks its (subscription, meter) balance row. Should that row stay locked (a
long transaction elsewhere, a stuck client), every write for it waits on the lock while holding
a pooled connection; without a bound, writes for one subscription could take the whole pool
and stall every other customer. ``KeyedLimiter`` lets at most ``limit`` writes per key hold a
connection; the others wait here, holding nothing, and nothing of them is sent.

A hot key and a stuck key both have waiters; they differ in progress. A waiter keeps waiting
while writes for its key complete (up to ``timeout`` seconds in all), and gives up as soon as
none has completed for ``stall`` seconds since it arrived (the lock timeout), or when its turn
comes from a write that failed with ``DatabaseUnavailable`` (a lock or statement timeout: the
key is stuck, and the ones in flight show it). Giving up raises ``DatabaseUnavailable``
(HTTP 503). Throughput on a hot key is
unaffected: its writes are serialised by the row lock anyway, and ``limit`` >= 2 keeps the next
one queued at the server.

Hand-written rather than a library: it is an ``asyncio.Semaphore`` per key, created on demand
and dropped when its last user leaves (so the table holds only keys in use), plus the time of
the key's last completed write.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

from gateway.storage.unavailable import DatabaseUnavailable


class _Slot:
    __slots__ = ("failed", "key", "progress", "semaphore", "users")

    def __init__(self, key: str, limit: int) -> None:
        self.key = key
        self.semaphore = asyncio.Semaphore(limit)
        self.users = 0
        self.progress = 0.0  # loop time of the last write that completed
        self.failed = 0.0  # loop time of the last write that failed with DatabaseUnavailable


def _busy() -> DatabaseUnavailable:
    return DatabaseUnavailable("too many writes in flight for one subscription and meter")


class KeyedLimiter:
    """At most ``limit`` concurrent holders per key (see the module docstring): a waiter gives
    up after ``stall`` seconds without progress on its key, or ``timeout`` seconds in all
    (None: no bound)."""

    def __init__(self, limit: int, *, timeout: float | None, stall: float | None) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self.timeout = timeout
        self.stall = stall
        self._slots: dict[str, _Slot] = {}

    def in_use(self) -> int:
        """Keys with a holder or a waiter (for tests and metrics)."""
        return len(self._slots)

    def free(self, key: str) -> bool:
        """Whether a holder of ``key`` would get its turn at once (no write waits for it)."""
        slot = self._slots.get(key)
        return slot is None or not slot.semaphore.locked()

    @asynccontextmanager
    async def hold(self, keys: Iterable[str]) -> AsyncIterator[None]:
        """Hold every key of ``keys`` (taken in sorted order, so that two holders of
        overlapping sets cannot deadlock); raises ``DatabaseUnavailable`` when it gives up."""
        loop = asyncio.get_running_loop()
        arrived = loop.time()
        deadline = None if self.timeout is None else arrived + self.timeout
        entered: list[_Slot] = []
        held: list[_Slot] = []
        try:
            for key in sorted(set(keys)):
                slot = self._slots.get(key)
                if slot is None:
                    slot = self._slots[key] = _Slot(key, self.limit)
                slot.users += 1
                entered.append(slot)
                if slot.semaphore.locked():
                    await self._wait_for_turn(slot, arrived, deadline)
                else:
                    await slot.semaphore.acquire()  # free: does not suspend
                held.append(slot)
            try:
                yield
            except DatabaseUnavailable:
                now = loop.time()
                for slot in held:
                    slot.failed = now
                raise
            now = loop.time()
            for slot in held:
                slot.progress = now
        finally:
            for slot in held:
                slot.semaphore.release()
            for slot in entered:
                slot.users -= 1
                if slot.users == 0:
                    del self._slots[slot.key]

    async def _wait_for_turn(self, slot: _Slot, arrived: float, deadline: float | None) -> None:
        loop = asyncio.get_running_loop()
        turn = asyncio.ensure_future(slot.semaphore.acquire())
        try:
            while True:
                now = loop.time()
                limits = [] if deadline is None else [deadline - now]
                if self.stall is not None:
                    limits.append(max(arrived, slot.progress) + self.stall - now)
                wait = max(0.0, min(limits)) if limits else None
                await asyncio.wait({turn}, timeout=wait)
                now = loop.time()
                stalled = self.stall is not None and now - max(arrived, slot.progress) >= self.stall
                if turn.done():
                    stuck = slot.failed >= arrived and slot.failed > slot.progress
                    if stalled or stuck:  # the turn came from a write that failed
                        slot.semaphore.release()
                        raise _busy()
                    return
                if stalled or (deadline is not None and now >= deadline):
                    raise _busy()
        except BaseException:
            if not turn.done():
                turn.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await turn
                if not turn.cancelled():  # acquired just as it was cancelled
                    slot.semaphore.release()
            raise
