"""Behind PgBouncer in transaction mode (GATEWAY_TRANSACTION_POOLING): exactly-once and the
requireBalance race hold, and no request fails, across two gateway processes.

PgBouncer is started by the test (``tests.pgbouncer``; skipped when it is not installed). Its
server connections carry the timeouts through ``connect_query``, as docs/operations.md says.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.billing.catalog import notify_catalog_changed
from gateway.billing.reconcile import reconcile
from gateway.storage.db import Database
from tests.factories import CREATE_USAGE_EVENT, balance, customer_on_plan, setup_pricing
from tests.pgbouncer import pgbouncer
from tests.servers import gateway_processes
from tests.test_faults import _default_price, _log_lines, _until

TIMEOUTS = "SET statement_timeout = 10000; SET lock_timeout = 2000"


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pgbouncer-gateways")


@pytest.fixture(scope="module")
def servers(database_url: str, logs: Path) -> Iterator[list[str]]:
    with (
        pgbouncer(database_url, connect_query=TIMEOUTS) as pooled_url,
        # 2 instances x 2 workers: four processes share the pooler, as in a deployment.
        gateway_processes(
            pooled_url,
            2,
            logs=logs,
            workers=2,
            GATEWAY_TRANSACTION_POOLING="true",
            GATEWAY_DIRECT_DATABASE_URL=database_url,
        ) as urls,
    ):
        yield urls


async def _post(client: httpx.AsyncClient, url: str, key: str, payload: Any) -> Any:
    response = await client.post(
        url + "/graphql",
        json={"query": CREATE_USAGE_EVENT, "variables": {"input": payload}},
        headers={"Authorization": f"Bearer {key}"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert "errors" not in body, body
    return body["data"]["createUsageEvent"]


async def test_duplicates_behind_pgbouncer_are_recorded_once(
    gql: Any, db: Database, secret_key: str, servers: list[str], logs: Path
) -> None:
    await setup_pricing(gql)
    sub_id = await customer_on_plan(gql, "user-1", "pro_monthly")
    payloads = [
        {
            "target": {"usageMeterSlug": "generations"},
            "subscriptionId": sub_id,
            "amount": 1,
            "transactionId": f"tx-{i // 5}",
        }
        for i in range(1000)
    ]
    # 100 in flight at a time, a transactionId's 5 sends side by side (so they run at once, on
    # both processes): more requests than connections would queue inside the HTTP client,
    # which is slow at it.
    in_flight = asyncio.Semaphore(100)

    async def send(i: int, payload: dict[str, Any]) -> Any:
        async with in_flight:
            return await _post(client, servers[i % 2], secret_key, payload)

    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=100)) as client:
        results = await asyncio.gather(*(send(i, p) for i, p in enumerate(payloads)))
    assert Counter(r["__typename"] for r in results) == {"UsageEventRecorded": 1000}
    assert Counter(r["replayed"] for r in results) == {False: 200, True: 800}
    assert await db.fetchval("SELECT count(*) FROM usage_events") == 200
    bal = await balance(gql)
    assert bal is not None
    assert (bal["availableBalance"], bal["usedBalance"]) == (900, 200)
    assert await reconcile(db) == []
    text = "\n".join(_log_lines(logs))
    assert "Traceback" not in text, text
    assert "is not set on the server's sessions" not in text, text


async def test_require_balance_race_behind_pgbouncer_records_exactly_the_credits(
    gql: Any, db: Database, secret_key: str, servers: list[str]
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
    assert await db.fetchval("SELECT count(*) FROM usage_events") == 10
    bal = await balance(gql)
    assert bal is not None
    assert (bal["availableBalance"], bal["usedBalance"]) == (0, 10)
    assert await reconcile(db) == []


async def test_catalog_changes_reach_every_process_behind_pgbouncer(
    gql: Any, db: Database, secret_key: str, servers: list[str]
) -> None:
    """LISTEN works only on the direct connection (through PgBouncer in transaction mode the
    notifications would go to whichever server connection ran the LISTEN): a change is seen at
    once, where the cached catalog would otherwise last a minute."""
    model = await setup_pricing(gql)
    await customer_on_plan(gql, "user-1", "pro_monthly")
    async with httpx.AsyncClient(timeout=30) as client:
        for base in servers:
            assert await _default_price(client, base, secret_key) == "generations_overage"
        async with db.transaction() as conn:
            await conn.execute(
                "UPDATE prices SET is_default = false, active = false"
                " WHERE slug = 'generations_overage'"
            )
            await conn.execute(
                "UPDATE prices SET is_default = true WHERE slug = 'generations_no_charge'"
            )
        for base in servers:  # not notified: the cached catalog is still served
            assert await _default_price(client, base, secret_key) == "generations_overage"
        async with db.transaction() as conn:
            await notify_catalog_changed(conn, uuid.UUID(model["id"]))
        for base in servers:

            async def fresh(base: str = base) -> bool:
                return await _default_price(client, base, secret_key) == "generations_no_charge"

            await _until(fresh, 2, f"{base} to see the catalog change")


def test_transaction_pooling_without_a_direct_url_is_refused_in_one_line() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update(
        DATABASE_URL="postgresql://gateway@127.0.0.1:1/billing", GATEWAY_TRANSACTION_POOLING="1"
    )
    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr == (
        "configuration error: GATEWAY_TRANSACTION_POOLING needs GATEWAY_DIRECT_DATABASE_URL: a direct"
        " PostgreSQL URL (not through the pooler) for LISTEN and migrations\n"
    )
