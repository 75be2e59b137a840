"""The periodic tidy-up of expired holds.

An expired hold already counts as freed on every read (``usage_reserved()`` ignores it), so
nothing depends on this running: it only rewrites held rows past their expiry to ``expired``,
which keeps the partial index of held rows (what every balance read probes) small. Each
process runs it; ``FOR UPDATE SKIP LOCKED`` keeps two from touching the same rows.

It goes customer by customer: one read finds the customers with expired holds (on Citus it
reads every shard, without locks), then ``sweep_usage_reservations()`` tidies each one's
holds on the customer's node (Citus takes row locks only in a statement of one customer).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from gateway.storage.db import Database

log = logging.getLogger(__name__)
BATCH = 1000


_DUE_CUSTOMERS_SQL = """
SELECT customer_id FROM usage_reservations
 WHERE status = 'held' AND expires_at <= now()
 GROUP BY customer_id ORDER BY min(expires_at) LIMIT $1
"""


async def sweep_reservations(db: Database, limit: int = BATCH) -> int:
    """Marks up to ``limit`` expired holds; returns how many."""
    swept = 0
    for row in await db.fetch(_DUE_CUSTOMERS_SQL, limit):
        if swept >= limit:
            break
        swept += await db.fetchval(
            "SELECT sweep_usage_reservations($1::uuid, $2)", row["customer_id"], limit - swept
        )
    return swept


class Sweeper:
    """Sweeps every ``interval`` seconds until stopped (0 disables it)."""

    def __init__(self, db: Database, interval: float) -> None:
        self.db = db
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.interval > 0:
            self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                # A full batch means more are due: go on at once (each batch is bounded).
                while await sweep_reservations(self.db) == BATCH:
                    pass
            except Exception:  # the next round retries; a read never depends on the sweep
                log.exception("sweeping expired reservations failed")
