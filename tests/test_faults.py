"""Faults: no request waits without bound, and the gateway heals by itself.

Real gateway processes (``tests.servers``) on a real PostgreSQL. The timeouts are made small
through the environment so that the tests stay short; the properties do not depend on the
values (a lock held for 5 s with a 1 s lock timeout is, for the gateway, the same situation as
a lock held for 20 s with the default 2 s).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from gateway.storage.db import Database, asyncpg_dsn
from tests.factories import CREATE_USAGE_EVENT, customer_on_plan, record, setup_pricing
from tests.servers import gateway_processes

LOCK_TIMEOUT = 1.0
HOLD_SECONDS = 5.0  # longer than any wait the gateway allows a request (see the module doc)


async def _record(
    client: httpx.AsyncClient, url: str, key: str, payload: dict[str, Any]
) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = await client.post(
        url + "/graphql",
        json={"query": CREATE_USAGE_EVENT, "variables": {"input": payload}},
        headers={"Authorization": f"Bearer {key}"},
    )
    return response, time.monotonic() - started


def _event(sub_id: str, transaction_id: str, amount: int = 1) -> dict[str, Any]:
    return {
        "target": {"usageMeterSlug": "generations"},
        "subscriptionId": sub_id,
        "amount": amount,
        "transactionId": transaction_id,
    }


def _assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "1"
    body = response.json()
    assert body["data"] is None
    (error,) = body["errors"]
    assert error["extensions"] == {"code": "SERVICE_UNAVAILABLE", "retryAfter": 1}
    assert error["message"] in (
        "Service unavailable: lock timeout; retry in 1 s",
        "Service unavailable: too many writes in flight for one subscription and meter;"
        " retry in 1 s",
    )


def _log_lines(logs: Path) -> list[str]:
    return [line for path in sorted(logs.glob("*.log")) for line in path.read_text().splitlines()]


async def test_a_locked_balance_stalls_only_its_own_subscription(
    gql: Any, db: Database, secret_key: str, database_url: str, tmp_path: Path
) -> None:
    await setup_pricing(gql)
    stuck = await customer_on_plan(gql, "stuck", "pro_monthly")
    others = [await customer_on_plan(gql, f"other-{i}", "pro_monthly") for i in range(4)]
    await record(gql, **_event(stuck, "stuck-first"))  # the balance row exists from here on

    env = {
        "GATEWAY_LOCK_TIMEOUT_SECONDS": str(LOCK_TIMEOUT),
    }
    locker = await asyncpg.connect(asyncpg_dsn(database_url))
    with gateway_processes(database_url, 2, logs=tmp_path, **env) as urls:
        limits = httpx.Limits(max_connections=100)
        async with httpx.AsyncClient(limits=limits, timeout=30) as client:
            lock = locker.transaction()
            await lock.start()
            await locker.execute(
                "SELECT 1 FROM meter_balances WHERE subscription_id = $1 FOR UPDATE", stuck
            )
            held_since = time.monotonic()

            stuck_requests = [
                asyncio.create_task(
                    _record(client, urls[i % 2], secret_key, _event(stuck, f"stuck-{i}"))
                )
                for i in range(12)
            ]

            async def other_customers() -> list[tuple[httpx.Response, float]]:
                """Every other customer records an event, again and again, while the lock
                is held; readiness is checked on the way."""
                answers: list[tuple[httpx.Response, float]] = []
                round_ = 0
                while time.monotonic() - held_since < HOLD_SECONDS:
                    answers += await asyncio.gather(
                        *(
                            _record(
                                client,
                                urls[(round_ + i) % 2],
                                secret_key,
                                _event(sub, f"o{i}-{round_}"),
                            )
                            for i, sub in enumerate(others)
                        )
                    )
                    for url in urls:
                        ready = await client.get(url + "/readyz")
                        assert ready.status_code == 200, ready.text
                    round_ += 1
                return answers

            other_answers = await other_customers()
            stuck_answers = await asyncio.gather(*stuck_requests)
            assert time.monotonic() - held_since >= HOLD_SECONDS
            await lock.rollback()  # release the lock
            await asyncio.sleep(1)  # anything still queued for the row would be written now

            # Every other customer's request completed, each within a second.
            assert len(other_answers) >= 4 * 5
            for response, elapsed in other_answers:
                assert response.status_code == 200, response.text
                result = response.json()["data"]["createUsageEvent"]
                assert result["__typename"] == "UsageEventRecorded", result
                assert elapsed < 1.0, elapsed
            # The 12 were told to retry, each after its wait for a turn (at most the lock
            # timeout) and for the row lock (PostgreSQL queues a row's waiters in two steps,
            # each bounded by the lock timeout), and none of them was written.
            for response, elapsed in stuck_answers:
                _assert_unavailable(response)
                assert elapsed < 3 * LOCK_TIMEOUT + 0.5, elapsed
            stuck_ids = [f"stuck-{i}" for i in range(12)]
            assert (
                await db.fetchval(
                    "SELECT count(*) FROM usage_events WHERE transaction_id = ANY($1)", stuck_ids
                )
                == 0
            )
            other_ids = [
                r.json()["data"]["createUsageEvent"]["usageEvent"]["transactionId"]
                for r, _ in other_answers
            ]
            assert await db.fetchval(
                "SELECT count(*) FROM usage_events WHERE transaction_id = ANY($1)", other_ids
            ) == len(other_ids)

            # Retried once the lock is gone, the 12 are recorded, once each.
            retried = await asyncio.gather(
                *(
                    _record(client, urls[i % 2], secret_key, _event(stuck, f"stuck-{i}"))
                    for i in range(12)
                )
            )
            assert Counter(
                (r.status_code, r.json()["data"]["createUsageEvent"]["replayed"])
                for r, _ in retried
            ) == {(200, False): 12}
            assert (
                await db.fetchval(
                    "SELECT count(*) FROM usage_events WHERE transaction_id = ANY($1)", stuck_ids
                )
                == 12
            )
    await locker.close()

    # One warning line per refused request, no stack trace.
    lines = _log_lines(tmp_path)
    assert sum("service unavailable in" in line for line in lines) == 12, lines
    assert not any("Traceback" in line for line in lines), lines
