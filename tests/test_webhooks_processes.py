"""Alerts and deliveries over several gateway processes on one database."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

import httpx
from standardwebhooks import Webhook

from gateway.storage.db import Database
from tests.alert_factories import CREDITS_PRICING, create_alert, create_endpoint
from tests.conftest import GraphQLClient
from tests.factories import CREATE_USAGE_EVENT, customer_on_plan, setup_pricing
from tests.receiver import receiver
from tests.servers import PROCESSES, gateway_processes

FAST_WORKER = {"GATEWAY_WEBHOOK_POLL_SECONDS": "0.05", "GATEWAY_WEBHOOK_TIMEOUT_SECONDS": "2"}


# 200 writers on one balance row over two processes: on a slow machine a process's waiters can
# see no write of their own complete for the lock timeout, and are told 503 with retryAfter
# (gateway/storage/isolation.py; nothing of them was sent). A client retries, with the same
# transactionId; the sums below still prove each event counted once.
RETRIES = 10


async def _post(client: httpx.AsyncClient, url: str, key: str, payload: dict[str, Any]) -> Any:
    for _ in range(RETRIES):
        response = await client.post(
            url + "/graphql",
            json={"query": CREATE_USAGE_EVENT, "variables": {"input": payload}},
            headers={"Authorization": f"Bearer {key}"},
            timeout=60,
        )
        if response.status_code != 503:
            break
        error = response.json()["errors"][0]["extensions"]
        assert error["code"] == "SERVICE_UNAVAILABLE", response.text
        await asyncio.sleep(error["retryAfter"])
    assert response.status_code == 200, response.text
    return response.json()["data"]["createUsageEvent"]


async def test_two_hundred_concurrent_events_over_two_processes_trigger_once(
    gql: GraphQLClient, db: Database, secret_key: str, database_url: str
) -> None:
    await setup_pricing(gql, CREDITS_PRICING)
    sub = await customer_on_plan(gql, "user-1", "daily_plan")
    await create_alert(gql, threshold={"percentUsed": 80})
    with receiver() as hooks, gateway_processes(database_url, 2, **FAST_WORKER) as servers:
        endpoint = await create_endpoint(gql, hooks.url)
        payloads = [
            {
                "target": {"usageMeterSlug": "credits"},
                "subscriptionId": sub,
                "amount": 5,
                "transactionId": f"op-{i}",
            }
            for i in range(200)
        ]
        async with httpx.AsyncClient(limits=httpx.Limits(max_connections=200)) as client:
            results = await asyncio.gather(
                *(_post(client, servers[i % 2], secret_key, p) for i, p in enumerate(payloads))
            )
        assert {r["__typename"] for r in results} == {"UsageEventRecorded"}
        # Serialised on the balance row: each event answered with its own balance after it.
        assert sorted(r["balance"]["usedBalance"] for r in results) == list(range(5, 1001, 5))
        received = await asyncio.to_thread(hooks.wait_for, 1)
        await asyncio.sleep(0.5)  # both workers polled ten times more
        # On a failure, say which step was missing: the alert event, its delivery, an attempt.
        state = {
            table: [dict(r) for r in await db.fetch(f"SELECT * FROM {table}")]
            for table in ("usage_alert_events", "webhook_deliveries", "webhook_attempts")
        }
        assert len(hooks.requests) == 1, state
    rows = await db.fetch("SELECT id::text, type FROM usage_alert_events")
    assert [r["type"] for r in rows] == ["triggered"]
    assert received[0].headers["webhook-id"] == rows[0]["id"]
    body = Webhook(endpoint["secret"]).verify(received[0].body, received[0].headers)
    assert body["data"]["balance"]["usedBalance"] == 800  # the event that reached 80%
    assert await db.fetchval("SELECT sum(amount) FROM usage_events") == 1000


async def test_a_process_killed_after_the_commit_leaves_the_delivery_to_another(
    gql: GraphQLClient, db: Database, secret_key: str, database_url: str
) -> None:
    await setup_pricing(gql, CREDITS_PRICING)
    sub = await customer_on_plan(gql, "user-1", "daily_plan")
    await create_alert(gql, threshold={"usedAbove": 10})
    with receiver() as hooks:
        await create_endpoint(gql, hooks.url)
        # The first process's worker has polled once at start and sleeps an hour: the event
        # it commits is still unsent when it is killed.
        with gateway_processes(database_url, 1, GATEWAY_WEBHOOK_POLL_SECONDS="3600") as first:
            async with httpx.AsyncClient() as client:
                result = await _post(
                    client,
                    first[0],
                    secret_key,
                    {
                        "target": {"usageMeterSlug": "credits"},
                        "subscriptionId": sub,
                        "amount": 10,
                        "transactionId": "t",
                    },
                )
            assert result["__typename"] == "UsageEventRecorded"
            os.kill(PROCESSES[first[0]].pid, signal.SIGKILL)
            PROCESSES[first[0]].wait(timeout=10)
        assert hooks.requests == []
        assert await db.fetchval("SELECT count(*) FROM webhook_deliveries") == 1
        with gateway_processes(database_url, 1, **FAST_WORKER):
            received = await asyncio.to_thread(hooks.wait_for, 1)
            status = await db.fetchval("SELECT status FROM webhook_deliveries")
            for _ in range(50):
                if status == "delivered":
                    break
                await asyncio.sleep(0.1)
                status = await db.fetchval("SELECT status FROM webhook_deliveries")
    event_id = await db.fetchval("SELECT id::text FROM usage_alert_events")
    assert [r.headers["webhook-id"] for r in received] == [event_id]
    assert status == "delivered"
