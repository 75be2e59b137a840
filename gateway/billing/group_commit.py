"""Group commit: single writes that arrive while others are in flight go out together.

PostgreSQL spends far more per event on a statement of its own than on an event in a
set-based batch (a round trip, a transaction, a commit's WAL flush). ``GroupCommitter`` lets a
write go out at once while fewer than ``in_flight`` of its writes are running in this process
(a lone request is never delayed); past that, new writes are gathered by group key, and when
a write in flight returns, the gathered writes of the oldest group go as one batch. Each
caller gets its own answer (or the exception the batch raised, as a single would have).

Bounds:

* ``max_events`` writes per batch; the rest of a group waits for the next turn.
* ``max_queue`` gathered writes in all; beyond it a write goes out on its own at once, as it
  would without group commit (the pool's acquire timeout bounds it then).
* ``max_wait`` seconds: the longest a gathered write waits for a turn. When the writes in
  flight are slow (a row lock held elsewhere), the oldest group goes anyway, so one stuck write
  cannot hold the others back for longer than that.
* ``ready(key, item)``: a gathered write that is not ready (its balance row has as many writes
  in flight as allowed, gateway.storage.isolation) is sent on its own, where it waits for its
  turn as a single does, instead of making its whole batch wait.

Cancellation: a caller cancelled while its write is gathered is dropped from the queue and
nothing of it is sent. Once its batch is sent, the batch runs on (in a task of its own) for
the others; the cancelled caller's write may then be recorded, as a single statement already
sent is today, and no other caller's answer is lost or given twice.

Hand-written: it is a queue of futures around two calls the caller supplies; no asyncio
library does "send now when idle, else batch behind the write in flight".
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")
R = TypeVar("R")


class GroupCommitter(Generic[K, T, R]):
    """Gathers ``single(key, item)`` calls into ``batch(key, items)`` calls (module docstring).

    ``batch`` must return one result per item, in order; it is only called with 2 or more.
    """

    def __init__(
        self,
        single: Callable[[K, T], Awaitable[R]],
        batch: Callable[[K, list[T]], Awaitable[list[R]]],
        *,
        in_flight: int,
        max_events: int,
        max_queue: int,
        max_wait: float,
        ready: Callable[[K, T], bool] | None = None,
        split_when: Callable[[Exception], bool] | None = None,
        split_by: Callable[[K, T], object] | None = None,
        patient_batch: Callable[[K, list[T]], Awaitable[list[R]]] | None = None,
    ) -> None:
        self._single = single
        self._batch = batch
        self._ready = ready
        # A batch failing with an exception ``split_when`` accepts is not answered with it: its
        # items are sent again in parts of one ``split_by`` value each, by ``patient_batch``
        # (or alone): a lock timeout of one part's row then holds back that part only.
        self._split_when = split_when
        self._split_by = split_by
        self._patient_batch = patient_batch or batch
        self.in_flight_limit = in_flight
        self.max_events = max_events
        self.max_queue = max_queue
        self.max_wait = max_wait
        self.in_flight = 0  # writes of this committer running now
        self.queued = 0  # gathered writes (cancelled ones included until their turn)
        self.batches = 0  # batch calls made (for tests and metrics)
        self.splits = 0  # batches given up and sent again in parts (split_when)
        self._queue: dict[K, list[tuple[T, asyncio.Future[R]]]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, key: K, item: T) -> R:
        if (
            self.in_flight_limit == 0
            or (not self._queue and self.in_flight < self.in_flight_limit)
            or self.queued >= self.max_queue
        ):
            return await self._alone(key, item)
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.setdefault(key, []).append((item, future))
        self.queued += 1
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.max_wait, self._overdue)
        # Cancelling the caller cancels the future: _send skips it (nothing is sent for it), or,
        # when its batch is already out, the batch's answer for it is dropped.
        return await future

    async def _alone(self, key: K, item: T) -> R:
        """A write sent at once, in the caller's task (no hop, no delay)."""
        self.in_flight += 1
        try:
            return await self._single(key, item)
        finally:
            self.in_flight -= 1
            self._drain()

    def _overdue(self) -> None:
        self._timer = None
        self._drain(overdue=True)

    def _drain(self, *, overdue: bool = False) -> None:
        """Send gathered groups while below the in-flight limit (one more when overdue)."""
        while self._queue and (overdue or self.in_flight < self.in_flight_limit):
            overdue = False
            key = next(iter(self._queue))
            entries = self._queue[key]
            taken, rest = entries[: self.max_events], entries[self.max_events :]
            if rest:
                self._queue[key] = rest
            else:
                del self._queue[key]
            self.queued -= len(taken)
            live = [(item, future) for item, future in taken if not future.done()]
            if self._ready is not None:
                ready = self._ready
                for item, future in [e for e in live if not ready(key, e[0])]:
                    live.remove((item, future))
                    self._spawn(self._send(key, [(item, future)], counted=False))
            if live:
                self.in_flight += 1
                self._spawn(self._send(key, live, counted=True))
        if self._timer is not None and not self._queue:
            self._timer.cancel()
            self._timer = None
        elif self._timer is None and self._queue:
            self._timer = asyncio.get_running_loop().call_later(self.max_wait, self._overdue)

    async def _resend(self, key: K, entries: list[tuple[T, asyncio.Future[R]]]) -> None:
        """One part of a split batch: its own answers, or its own exception."""
        entries = [(item, future) for item, future in entries if not future.done()]
        if not entries:  # its callers went away
            return
        try:
            if len(entries) == 1:
                results = [await self._single(key, entries[0][0])]
            else:
                results = await self._patient_batch(key, [item for item, _ in entries])
        except Exception as exc:
            _answer(entries, exc)
        else:
            _answer(entries, results)

    def _spawn(self, coroutine: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)  # a reference until done (the loop keeps only weak ones)
        task.add_done_callback(self._tasks.discard)

    async def _send(
        self, key: K, entries: list[tuple[T, asyncio.Future[R]]], *, counted: bool
    ) -> None:
        try:
            if len(entries) == 1:
                results = [await self._single(key, entries[0][0])]
            else:
                self.batches += 1
                try:
                    results = await self._batch(key, [item for item, _ in entries])
                except Exception as exc:
                    if self._split_when is None or not self._split_when(exc):
                        raise
                    self.splits += 1
                    parts: dict[object, list[tuple[T, asyncio.Future[R]]]] = {}
                    for item, future in entries:
                        part = id(future) if self._split_by is None else self._split_by(key, item)
                        parts.setdefault(part, []).append((item, future))
                    await asyncio.gather(*(self._resend(key, part) for part in parts.values()))
                    return
        except asyncio.CancelledError:  # the loop is shutting down
            for _, future in entries:
                future.cancel()
            raise
        except Exception as exc:  # each caller gets what a single would have raised
            _answer(entries, exc)
        else:
            _answer(entries, results)
        finally:
            if counted:
                self.in_flight -= 1
                self._drain()


def _answer(entries: list[tuple[T, asyncio.Future[R]]], outcome: list[R] | Exception) -> None:
    """Each caller still waiting gets its own result, or the exception."""
    if not isinstance(outcome, Exception) and len(outcome) != len(entries):
        outcome = RuntimeError(f"a batch answered {len(outcome)} of {len(entries)} items")
    for index, (_, future) in enumerate(entries):
        if future.done():  # its caller went away
            continue
        if isinstance(outcome, Exception):
            future.set_exception(outcome)
        else:
            future.set_result(outcome[index])
