"""What a subscription sends: its balance after every change, or its customers' alert events.

A feed is a producer task that reads (through the normal read path) when the hub wakes it and
puts what it read into a bounded queue, and an async iterator over that queue for the
GraphQL subscription. A full queue means the client reads slower than its balance changes:
``on_overflow`` drops the connection and the feed ends, rather than buffering without limit.
While the database is unreachable the producer waits for the next wake-up (the listener
wakes everything once it has reconnected) or retries after ``RETRY_SECONDS``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import orjson

from gateway.billing.records import BalanceRow
from gateway.live.hub import BalanceKey, Hub
from gateway.live.reads import SharedReads
from gateway.live.sessions import Session, SessionEnded
from gateway.storage.unavailable import DatabaseUnavailable

logger = logging.getLogger(__name__)

RETRY_SECONDS = 1.0
PERIOD_MARGIN_SECONDS = 0.05  # read just after the period's end, not just before it


class SlowClient(Exception):
    """The client let ``queue_size`` messages pile up: its connection is dropped."""


Put = Callable[[Any], None]


async def _feed(
    produce: Callable[[Put], Awaitable[None]],
    queue_size: int,
    on_overflow: Callable[[], Awaitable[None]],
) -> AsyncIterator[Any]:
    queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=queue_size)

    def put(item: Any) -> None:
        try:
            queue.put_nowait(item)
        except asyncio.QueueFull:
            raise SlowClient(f"{queue_size} messages not yet sent") from None

    async def run() -> None:
        try:
            await produce(put)
        except SlowClient as exc:
            logger.info("live: dropping a slow client: %s", exc)
            await on_overflow()
            while not queue.empty():  # the connection is closing: what is queued is dropped
                queue.get_nowait()
            queue.put_nowait(exc)
        except BaseException as exc:  # handed to the subscription, which ends with it
            while True:  # make room: the end matters more than what is still queued
                try:
                    queue.put_nowait(exc)
                    break
                except asyncio.QueueFull:
                    queue.get_nowait()
            if not isinstance(exc, Exception):
                raise

    task = asyncio.create_task(run(), name="live-feed")
    try:
        while True:
            item = await queue.get()
            if isinstance(item, SlowClient):
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


def _seconds_until(at: datetime) -> float:
    return max(0.0, (at - datetime.now(UTC)).total_seconds()) + PERIOD_MARGIN_SECONDS


def _earliest(*timeouts: float | None) -> float | None:
    given = [t for t in timeouts if t is not None]
    return min(given) if given else None


def balance_feed(
    hub: Hub,
    reads: SharedReads,
    key: BalanceKey,
    session: Session,
    *,
    queue_size: int,
    on_overflow: Callable[[], Awaitable[None]],
) -> AsyncIterator[BalanceRow | None]:
    """The balance of ``key`` now, then whenever it differs from the last one sent (None:
    the meter has no balance there). Reads are sequential: at most one in flight and one
    pending (the wake-up's flag), so updates arrive in order and a burst ends with the final
    value. Raises SessionEnded when the credential expires or is revoked."""

    async def produce(put: Put) -> None:
        with hub.balance(key) as wake:
            last: object = object()
            retry: float | None = None
            while True:
                wake.clear()  # a change committed from here on rings again
                try:
                    row = await reads.balance(key)
                    await reads.check(session)  # revocation, before every message
                except DatabaseUnavailable as exc:
                    logger.info("live: balance read failed, waiting: %s", exc.reason)
                    retry = RETRY_SECONDS
                else:
                    retry = None
                    if row != last:
                        put(row)
                        last = row
                period_end = None if not isinstance(last, BalanceRow) else last.period_end
                # The database is unreachable: retry in a while, whatever else is due.
                timeout = retry or _earliest(
                    None if period_end is None else _seconds_until(period_end),
                    session.seconds_left(),
                )
                await wake.wait(timeout)

    return _feed(produce, queue_size, on_overflow)


_ALERT_EVENTS_SQL = """
SELECT e.id, e.payload -> 'data' AS data, c.pricing_model_id
  FROM usage_alert_events e JOIN customers c ON c.id = e.customer_id
 WHERE e.id = ANY($1::uuid[])
 ORDER BY e.id
"""


def alert_feed(
    hub: Hub,
    reads: SharedReads,
    customer_id: uuid.UUID | None,
    session: Session,
    *,
    queue_size: int,
    on_overflow: Callable[[], Awaitable[None]],
) -> AsyncIterator[tuple[dict[str, Any], uuid.UUID]]:
    """Each alert event of the customer (None: of every customer) written from now on, as
    (the payload's ``data``, the customer's pricing model id), in the order written."""

    async def produce(put: Put) -> None:
        with hub.alerts(customer_id) as wake:
            while True:
                await wake.wait(session.seconds_left())
                wake.clear()
                if len(wake.pending) > queue_size:
                    raise SlowClient(f"{len(wake.pending)} alert events not yet read")
                ids, wake.pending[:] = list(wake.pending), []
                try:
                    await reads.check(session)
                    rows = await reads.db.fetch(_ALERT_EVENTS_SQL, ids) if ids else []
                except DatabaseUnavailable as exc:
                    logger.info("live: alert read failed, retrying: %s", exc.reason)
                    wake.pending[:0] = ids
                    wake.ring()
                    await asyncio.sleep(RETRY_SECONDS)
                    continue
                for row in rows:
                    data = row["data"]
                    put(
                        (
                            orjson.loads(data) if isinstance(data, str) else data,
                            row["pricing_model_id"],
                        )
                    )

    return _feed(produce, queue_size, on_overflow)


__all__ = ["SessionEnded", "SlowClient", "alert_feed", "balance_feed"]
