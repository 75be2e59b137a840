"""The delivery worker: every gateway process runs one (started and stopped by the app).

Each round it claims at most ``GATEWAY_WEBHOOK_BATCH_SIZE`` due deliveries, sends them
concurrently (each bounded by ``GATEWAY_WEBHOOK_TIMEOUT_SECONDS``), records every attempt,
and updates the oldest-pending gauge; then it sleeps ``GATEWAY_WEBHOOK_POLL_SECONDS``
unless the round was full. A database error ends the round, not the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from datetime import UTC, datetime, timedelta

import httpx

from gateway.settings import Settings
from gateway.storage.db import Database
from gateway.storage.unavailable import UNAVAILABLE_ERRORS, DatabaseUnavailable, unavailable
from gateway.webhooks import deliveries, metrics, sending
from gateway.webhooks.addresses import AddressPolicy
from gateway.webhooks.signing import signed_headers

logger = logging.getLogger(__name__)


class DeliveryWorker:
    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.poll = settings.gateway_webhook_poll_seconds
        self.timeout = settings.gateway_webhook_timeout_seconds
        self.batch = settings.gateway_webhook_batch_size
        self.address_policy = AddressPolicy.of(settings)
        self.retry = deliveries.RetryPolicy(
            base_seconds=settings.gateway_webhook_retry_base_seconds,
            max_seconds=settings.gateway_webhook_retry_max_seconds,
            window=timedelta(hours=settings.gateway_webhook_retry_hours),
        )
        self.rng = random.Random()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="webhook-delivery-worker")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        async with sending.http_client(self.timeout) as client:
            while True:
                try:
                    sent = await self.round(client)
                except asyncio.CancelledError:
                    raise
                except DatabaseUnavailable as exc:  # an outage is expected: one line, no trace
                    logger.warning("webhook delivery round skipped: %s", exc.reason)
                    sent = 0
                except UNAVAILABLE_ERRORS as exc:
                    logger.warning("webhook delivery round skipped: %s", unavailable(exc).reason)
                    sent = 0
                except Exception:
                    logger.exception("webhook delivery round failed")
                    sent = 0
                if sent < self.batch:
                    await asyncio.sleep(self.poll)

    async def round(self, client: httpx.AsyncClient) -> int:
        """One claim-send-record round; returns how many deliveries it sent."""
        claimed = await deliveries.claim(
            self.db, self.batch, deliveries.claim_seconds(self.timeout)
        )
        if claimed:
            await asyncio.gather(*(self._deliver(client, d) for d in claimed))
        metrics.OLDEST_PENDING.set(await deliveries.oldest_pending_seconds(self.db))
        return len(claimed)

    async def _deliver(self, client: httpx.AsyncClient, d: deliveries.Claimed) -> None:
        headers = signed_headers(d.secret, str(d.event_id), datetime.now(UTC), d.body)
        outcome = await sending.post(
            client, d.url, headers, d.body, self.address_policy, self.timeout
        )
        metrics.ATTEMPTS.labels(outcome.result).inc()
        status = await deliveries.record(
            self.db, d, outcome, self.retry, datetime.now(UTC), self.rng
        )
        if status != "pending":
            metrics.DELIVERIES.labels(status).inc()
        if not outcome.delivered:
            logger.info(
                "webhook delivery %s attempt %d: %s (%s)", d.id, d.attempt, outcome.result, status
            )
