"""The baseline of benchmark 1: a bare FastAPI + asyncpg endpoint (part of the bench only).

``POST /event`` with ``{"subscriptionId", "transactionId", "amount", ...}`` inserts one row
into the real ``usage_events`` table (same indexes, same foreign keys) with
``ON CONFLICT DO NOTHING`` on the idempotency key, in one round trip. It knows nothing of
balances, grants, authentication or GraphQL: it is "what PostgreSQL and the HTTP stack allow"
for writing one event. The subscription's ids and current period are read once at start-up.

Served by the same uvicorn options as the gateway (``uvicorn --factory
bench.baseline_app:create_app``), with the same pool size (GATEWAY_POOL_MIN_SIZE/MAX_SIZE).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import orjson
import uuid_utils
from fastapi import FastAPI, Request, Response

from gateway.storage.db import asyncpg_dsn

INSERT = """
INSERT INTO usage_events (id, customer_id, subscription_id, usage_meter_id, price_id,
                          billing_period_id, period_start, period_end, amount, consumed,
                          covered, seq, transaction_id, usage_date, properties)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, 0, 0, $10, now(), '{}'::jsonb)
ON CONFLICT (customer_id, usage_meter_id, transaction_id) DO NOTHING
"""

# Each subscription's customer, the meter's default price and the current billing period.
TARGETS = """
SELECT s.id::text AS subscription_id, s.customer_id, m.id AS meter_id, pr.id AS price_id,
       billing_period_id(s.id, p.period_start) AS period_id, p.period_start, p.period_end
  FROM subscriptions s
  JOIN customers c ON c.id = s.customer_id
  JOIN usage_meters m ON m.pricing_model_id = c.pricing_model_id AND m.slug = $1
  JOIN prices pr ON pr.usage_meter_id = m.id AND pr.is_default AND pr.type = 'usage'
  CROSS JOIN LATERAL billing_period(s.start_date, s.interval_unit, s.interval_count, now()) p
"""


async def load_targets(conn: Any, meter_slug: str) -> dict[str, tuple[Any, ...]]:
    rows = await conn.fetch(TARGETS, meter_slug)
    return {
        r["subscription_id"]: (
            r["customer_id"],
            uuid.UUID(r["subscription_id"]),
            r["meter_id"],
            r["price_id"],
            r["period_id"],
            r["period_start"],
            r["period_end"],
        )
        for r in rows
    }


async def _no_reset(_conn: Any) -> None:
    """This endpoint leaves no session state: skip asyncpg's reset query on release (one
    round trip per request)."""


def create_app() -> FastAPI:
    url = asyncpg_dsn(os.environ["DATABASE_URL"])
    meter = os.environ.get("BENCH_METER", "generations")
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        pool = await asyncpg.create_pool(
            url,
            min_size=int(os.environ.get("GATEWAY_POOL_MIN_SIZE", "2")),
            max_size=int(os.environ.get("GATEWAY_POOL_MAX_SIZE", "10")),
            server_settings={"timezone": "UTC", "application_name": "bench-baseline"},
            reset=_no_reset,
        )
        async with pool.acquire() as conn:
            state["targets"] = await load_targets(conn, meter)
        state["pool"] = pool
        try:
            yield
        finally:
            await pool.close()

    app = FastAPI(title="bench baseline", lifespan=lifespan)

    @app.post("/event")
    async def event(request: Request) -> Response:
        data = orjson.loads(await request.body())
        target = state["targets"].get(data["subscriptionId"])
        if target is None:
            return Response(
                b'{"error":"unknown subscription"}', status_code=404, media_type="application/json"
            )
        customer, sub, meter_id, price, period, start, end = target
        await state["pool"].execute(
            INSERT,
            uuid.UUID(bytes=uuid_utils.uuid7().bytes),
            customer,
            sub,
            meter_id,
            price,
            period,
            start,
            end,
            int(data["amount"]),
            data["transactionId"],
        )
        return Response(b'{"ok":true}', media_type="application/json")

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
