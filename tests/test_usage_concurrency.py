"""Exactly-once under concurrency: several gateway processes on one database."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from gateway.billing.reconcile import reconcile
from gateway.storage.db import Database
from tests.factories import (
    CREATE_USAGE_EVENT,
    CREATE_USAGE_EVENTS,
    balance,
    customer_on_plan,
    record,
    setup_pricing,
)
from tests.servers import gateway_processes


@pytest.fixture(scope="module")
def servers(database_url: str) -> Iterator[list[str]]:
    with gateway_processes(database_url, 2) as urls:
        yield urls


async def _post(client: httpx.AsyncClient, url: str, key: str, payload: Any) -> Any:
    """createUsageEvent for one input, createUsageEvents for a list of them."""
    batch = isinstance(payload, list)
    response = await client.post(
        url + "/graphql",
        json={
            "query": CREATE_USAGE_EVENTS if batch else CREATE_USAGE_EVENT,
            "variables": {"input": payload},
        },
        headers={"Authorization": f"Bearer {key}"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert "errors" not in body, body
    return body["data"]["createUsageEvents" if batch else "createUsageEvent"]


async def test_concurrent_duplicates_across_processes_are_recorded_once(
    gql, db: Database, secret_key: str, servers: list[str]
) -> None:
    await setup_pricing(gql)
    sub_id = await customer_on_plan(gql, "user-1", "pro_monthly")
    payloads = [
        {
            "target": {"usageMeterSlug": "generations"},
            "subscriptionId": sub_id,
            "amount": 7,
            "transactionId": f"op-{i % 20}",
        }
        for i in range(200)
    ]
    limits = httpx.Limits(max_connections=200)
    async with httpx.AsyncClient(limits=limits) as client:
        results = await asyncio.gather(
            *(_post(client, servers[i % 2], secret_key, p) for i, p in enumerate(payloads))
        )
    assert Counter(r["__typename"] for r in results) == {"UsageEventRecorded": 200}
    assert Counter(r["replayed"] for r in results) == {False: 20, True: 180}
    assert await db.fetchval("SELECT count(*) FROM usage_events") == 20
    # Every answer for one transactionId names the same event.
    by_key: dict[str, set[str]] = {}
    for p, r in zip(payloads, results, strict=True):
        by_key.setdefault(p["transactionId"], set()).add(r["usageEvent"]["id"])
    assert all(len(ids) == 1 for ids in by_key.values())
    # 20 x 7 = 140 used of 1,100 credits, and the stored state equals a recomputation.
    bal = await balance(gql)
    assert bal is not None
    assert (bal["availableBalance"], bal["usedBalance"], bal["balanceLimit"]) == (960, 140, 1100)
    assert await reconcile(db) == []


async def test_require_balance_race_records_exactly_what_the_credits_cover(
    gql, db: Database, secret_key: str, servers: list[str]
) -> None:
    await setup_pricing(gql)
    sub_id = await customer_on_plan(gql, "user-1", "free_monthly")  # 10 credits a month
    payloads = [
        {
            "target": {"usageMeterSlug": "generations"},
            "subscriptionId": sub_id,
            "amount": 1,
            "transactionId": f"race-{i}",
            "requireBalance": True,
        }
        for i in range(100)
    ]
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=100)) as client:
        results = await asyncio.gather(
            *(_post(client, servers[i % 2], secret_key, p) for i, p in enumerate(payloads))
        )
    assert Counter(r["__typename"] for r in results) == {
        "UsageEventRecorded": 10,
        "InsufficientBalance": 90,
    }
    assert {r["availableBalance"] for r in results if r["__typename"] == "InsufficientBalance"} == {
        0
    }
    assert await db.fetchval("SELECT count(*) FROM usage_events") == 10
    bal = await balance(gql)
    assert bal is not None
    assert (bal["availableBalance"], bal["usedBalance"]) == (0, 10)
    assert await reconcile(db) == []


async def test_a_cancelled_request_retried_is_charged_once(
    gql, db: Database, secret_key: str, servers: list[str]
) -> None:
    """A client times out mid-flight and retries with the same transactionId."""
    await setup_pricing(gql)
    sub_id = await customer_on_plan(gql, "user-1", "pro_monthly")
    payload = {
        "target": {"usageMeterSlug": "generations"},
        "subscriptionId": sub_id,
        "amount": 5,
        "transactionId": "gen_timeout",
    }
    # Hold the (subscription, meter) lock so the first request is stuck in the database.
    async with db.transaction() as conn:
        await conn.execute(
            "INSERT INTO meter_balances (subscription_id, usage_meter_id, customer_id)"
            " SELECT s.id, m.id, s.customer_id FROM subscriptions s, usage_meters m"
            " WHERE s.id = $1 AND m.slug = 'generations'",
            sub_id,
        )
    lock = await db.pool.acquire()
    tx = lock.transaction()
    await tx.start()
    await lock.execute("SELECT 1 FROM meter_balances FOR UPDATE")
    async with httpx.AsyncClient() as client:
        first = asyncio.create_task(_post(client, servers[0], secret_key, payload))
        await asyncio.sleep(0.5)
        first.cancel()  # the client gives up; the server may still commit
        with pytest.raises(asyncio.CancelledError):
            await first
        await tx.rollback()
        await db.pool.release(lock)
        retry = await _post(client, servers[1], secret_key, payload)
        again = await _post(client, servers[0], secret_key, payload)
    assert retry["__typename"] == "UsageEventRecorded"
    assert again["replayed"] is True
    assert again["usageEvent"]["id"] == retry["usageEvent"]["id"]
    assert await db.fetchval("SELECT count(*) FROM usage_events") == 1
    bal = await balance(gql)
    assert bal is not None and bal["usedBalance"] == 5
    assert await reconcile(db) == []


async def test_concurrent_overlapping_batches_charge_each_key_once(
    gql, db: Database, secret_key: str, servers: list[str]
) -> None:
    """Batches written by the steady statement (migration 0005), racing on the same locks and
    sharing half their keys with the next batch: every key is charged once."""
    await setup_pricing(gql)
    subs = [await customer_on_plan(gql, f"user-{i}", "pro_monthly") for i in range(3)]
    for sub in subs:  # the period's grants are issued: the batches are the steady case
        await record(gql, subscriptionId=sub, amount=1, transactionId="seed")

    def batch(k: int) -> list[dict[str, Any]]:
        # keys k*6 .. k*6+11: the second half is the next batch's first half
        return [
            {
                "target": {"usageMeterSlug": "generations"},
                "subscriptionId": subs[n % 3],
                "amount": 1 + n % 5,
                "transactionId": f"b-{n}",
            }
            for n in range(k * 6, k * 6 + 12)
        ]

    batches = [batch(k) for k in range(16)]
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=32)) as client:
        answers = await asyncio.gather(
            *(_post(client, servers[k % 2], secret_key, items) for k, items in enumerate(batches))
        )
    results = [r for answer in answers for r in answer]
    assert Counter(r["__typename"] for r in results) == {"UsageEventRecorded": 16 * 12}
    keys = {f"b-{n}" for n in range(16 * 6 + 6)}  # 102 distinct keys
    assert Counter(r["replayed"] for r in results) == {False: 102, True: 16 * 12 - 102}
    # Every answer for one key names the same event.
    ids: dict[str, set[str]] = {}
    for r in results:
        ids.setdefault(r["usageEvent"]["transactionId"], set()).add(r["usageEvent"]["id"])
    assert set(ids) == keys and all(len(v) == 1 for v in ids.values())
    rows = await db.fetch(
        "SELECT transaction_id, amount FROM usage_events WHERE transaction_id LIKE 'b-%'"
    )
    assert sorted(r["transaction_id"] for r in rows) == sorted(keys)
    charged = sum(1 + int(k[2:]) % 5 for k in keys)
    assert await db.fetchval("SELECT sum(used) FROM usage_totals") == charged + 3  # + seeds
    assert await reconcile(db) == []
