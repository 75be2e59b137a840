"""Reservations under concurrency: two gateway processes on one database."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.billing.reconcile import reconcile
from gateway.storage.db import Database
from tests.factories import customer_on_plan, setup_pricing
from tests.reservation_docs import FINALIZE, RELEASE, RESERVE, full_balance
from tests.servers import gateway_processes


@pytest.fixture(scope="module")
def servers(database_url: str) -> Iterator[list[str]]:
    with gateway_processes(database_url, 2) as urls:
        yield urls


async def _post(
    client: httpx.AsyncClient, url: str, key: str, document: str, field: str, payload: Any
) -> Any:
    response = await client.post(
        url + "/graphql",
        json={"query": document, "variables": {"input": payload}},
        headers={"Authorization": f"Bearer {key}"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert "errors" not in body, body
    return body["data"][field]


async def test_a_hundred_holds_race_for_ten_credits(
    gql, db: Database, secret_key: str, servers: list[str]
) -> None:
    await setup_pricing(gql)
    sub = await customer_on_plan(gql, "user-1", "free_monthly")  # 10 credits a month
    payloads = [
        {
            "target": {"usageMeterSlug": "generations"},
            "subscriptionId": sub,
            "amount": 1,
            "transactionId": f"llm-{i}",
        }
        for i in range(100)
    ]
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=100)) as client:
        results = await asyncio.gather(
            *(
                _post(client, servers[i % 2], secret_key, RESERVE, "reserveUsage", p)
                for i, p in enumerate(payloads)
            )
        )
        assert Counter(r["__typename"] for r in results) == {
            "UsageReserved": 10,
            "InsufficientBalance": 90,
        }
        assert {
            (r["availableBalance"], r["required"])
            for r in results
            if r["__typename"] == "InsufficientBalance"
        } == {(0, 1)}
        assert await db.fetchval("SELECT count(*) FROM usage_reservations") == 10
        assert await db.fetchval("SELECT count(*) FROM usage_events") == 0
        bal = await full_balance(gql)
        assert bal is not None
        assert (bal["availableBalance"], bal["reservedBalance"], bal["usedBalance"]) == (0, 10, 0)

        held = [r["reservation"]["id"] for r in results if r["__typename"] == "UsageReserved"]
        # Each settled with 2, and each finalization sent twice, to both processes at once.
        settled = await asyncio.gather(
            *(
                _post(
                    client,
                    servers[k % 2],
                    secret_key,
                    FINALIZE,
                    "finalizeUsageReservation",
                    {"reservationId": rid, "amount": 2},
                )
                for rid in held
                for k in range(2)
            )
        )
    assert Counter(r["__typename"] for r in settled) == {"UsageEventRecorded": 20}
    assert Counter(r["replayed"] for r in settled) == {False: 10, True: 10}
    assert await db.fetchval("SELECT count(*) FROM usage_events") == 10
    assert (
        await db.fetchval("SELECT count(*) FROM usage_reservations WHERE status = 'finalized'")
        == 10
    )
    bal = await full_balance(gql)
    assert bal is not None
    assert (
        bal["usedBalance"],
        bal["reservedBalance"],
        bal["availableBalance"],
        bal["balanceLimit"],
    ) == (20, 0, -10, 10)
    assert await reconcile(db) == []


async def test_duplicate_holds_across_processes_hold_once(
    gql, db: Database, secret_key: str, servers: list[str]
) -> None:
    await setup_pricing(gql)
    sub = await customer_on_plan(gql, "user-1", "pro_monthly")
    payload = {
        "target": {"usageMeterSlug": "generations"},
        "subscriptionId": sub,
        "amount": 50,
        "transactionId": "same",
    }
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=40)) as client:
        results = await asyncio.gather(
            *(
                _post(client, servers[i % 2], secret_key, RESERVE, "reserveUsage", payload)
                for i in range(40)
            )
        )
    assert Counter(r["__typename"] for r in results) == {"UsageReserved": 40}
    assert Counter(r["replayed"] for r in results) == {False: 1, True: 39}
    assert len({r["reservation"]["id"] for r in results}) == 1
    bal = await full_balance(gql)
    assert bal is not None
    assert (bal["reservedBalance"], bal["availableBalance"]) == (50, 1050)


async def _db_queries(client: httpx.AsyncClient, url: str) -> float:
    """gateway_db_queries_total of one process, from its /metrics."""
    text = (await client.get(url + "/metrics", timeout=10)).text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    return sum(s.value for s in families["gateway_db_queries"].samples if s.name.endswith("_total"))


async def test_a_hold_made_by_another_process_is_settled_in_one_round_trip(
    gql, db: Database, database_url: str, secret_key: str
) -> None:
    """The settling process does not know the reservation's customer: on one PostgreSQL the
    finalize (or release) call looks it up in its own statement, so it stays one round trip;
    a reservation that does not exist is NOT_FOUND in one round trip and writes nothing."""
    await setup_pricing(gql)
    sub = await customer_on_plan(gql, "user-1", "pro_monthly")
    hold = {"target": {"usageMeterSlug": "generations"}, "subscriptionId": sub, "amount": 5}
    quiet = {"GATEWAY_WEBHOOK_WORKER": "false", "GATEWAY_RESERVATION_SWEEP_SECONDS": "0"}
    with gateway_processes(database_url, 2, **quiet) as (maker, settler):
        async with httpx.AsyncClient() as client:

            async def post(url: str, document: str, field: str, payload: Any) -> Any:
                return await _post(client, url, secret_key, document, field, payload)

            # The settler's credential and catalog caches are warm (a hold of its own); the
            # owners of the holds made by the other process are not known to it.
            await post(settler, RESERVE, "reserveUsage", {**hold, "transactionId": "r0"})
            missing = {"reservationId": "00000000-0000-7000-8000-000000000000", "amount": 1}
            first, second = [
                (await post(maker, RESERVE, "reserveUsage", {**hold, "transactionId": t}))[
                    "reservation"
                ]["id"]
                for t in ("r1", "r2")
            ]
            counted = []
            for document, field, payload in (
                (FINALIZE, "finalizeUsageReservation", {"reservationId": first, "amount": 3}),
                (RELEASE, "releaseUsageReservation", {"reservationId": second}),
                (FINALIZE, "finalizeUsageReservation", missing),
            ):
                before = await _db_queries(client, settler)
                result = await post(settler, document, field, payload)
                counted.append((result["__typename"], await _db_queries(client, settler) - before))
    assert counted == [
        ("UsageEventRecorded", 1),
        ("UsageReservationReleased", 1),
        ("NotFound", 1),
    ]
    rows = await db.fetch("SELECT transaction_id, status FROM usage_reservations ORDER BY 1")
    assert [tuple(r) for r in rows] == [("r0", "held"), ("r1", "finalized"), ("r2", "released")]
    assert await db.fetchval("SELECT count(*) FROM usage_events") == 1
