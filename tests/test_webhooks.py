"""Webhook deliveries to a real receiver on loopback: signatures, retries, timeouts, claims."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from standardwebhooks import Webhook

from gateway.api.app import create_app
from gateway.settings import Settings
from gateway.storage.db import Database
from gateway.webhooks import deliveries, sending
from gateway.webhooks.addresses import AddressPolicy
from gateway.webhooks.worker import DeliveryWorker
from tests.alert_factories import CREDITS_PRICING, ENDPOINTS, create_alert, create_endpoint
from tests.conftest import GraphQLClient
from tests.factories import customer_on_plan, ok, record, setup_pricing
from tests.receiver import HANG, Received, receiver


@pytest.fixture
async def worker(db: Database, settings: Settings) -> AsyncIterator[DeliveryWorker]:
    running = DeliveryWorker(db, settings)
    running.start()
    yield running
    await running.stop()


async def _fire_one(gql: GraphQLClient, url: str) -> str:
    """An endpoint at url, an alert, and usage that fires it once; returns the secret."""
    await setup_pricing(gql, CREDITS_PRICING)
    sub = await customer_on_plan(gql, "user-1", "daily_plan")
    endpoint = await create_endpoint(gql, url, eventTypes=["usage_alert.triggered"])
    assert endpoint["endpoint"]["eventTypes"] == ["usage_alert.triggered"]
    await create_alert(gql, threshold={"usedAbove": 10})
    result = await record(
        gql, target={"usageMeterSlug": "credits"}, subscriptionId=sub, amount=10, transactionId="x"
    )
    assert result["__typename"] == "UsageEventRecorded"
    return str(endpoint["secret"])


async def _wait(hooks: Any, count: int) -> list[Received]:
    received: list[Received] = await asyncio.to_thread(hooks.wait_for, count)
    return received


async def _deliveries(gql: GraphQLClient) -> list[dict[str, Any]]:
    endpoints = ok(await gql(ENDPOINTS), "webhookEndpoints")
    assert len(endpoints) == 1
    found: list[dict[str, Any]] = endpoints[0]["deliveries"]
    return found


async def _settled(gql: GraphQLClient) -> list[dict[str, Any]]:
    for _ in range(100):
        found = await _deliveries(gql)
        if found and found[0]["status"] != "PENDING":
            return found
        await asyncio.sleep(0.05)
    return await _deliveries(gql)


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_two_500s_then_200_make_three_attempts_of_one_event(
    gql: GraphQLClient, db: Database, worker: DeliveryWorker
) -> None:
    delivered_before = _sample("gateway_webhook_deliveries_total", outcome="delivered")
    errors_before = _sample("gateway_webhook_attempts_total", result="http_error")
    with receiver([500, 500, 200]) as hooks:
        secret = await _fire_one(gql, hooks.url)
        received = await _wait(hooks, 3)
        found = await _settled(gql)
        await asyncio.sleep(0.3)
        assert len(hooks.requests) == 3  # nothing after the acknowledgement
    event_id = await db.fetchval("SELECT id::text FROM usage_alert_events")
    assert {r.headers["webhook-id"] for r in received} == {event_id}
    for r in received:
        Webhook(secret).verify(r.body, r.headers)
    assert len(found) == 1
    assert found[0]["eventId"] == event_id
    assert found[0]["eventType"] == "usage_alert.triggered"
    assert found[0]["status"] == "DELIVERED"
    assert [(a["statusCode"], a["error"]) for a in found[0]["attempts"]] == [
        (500, "HTTP 500"),
        (500, "HTTP 500"),
        (200, None),
    ]
    assert all(a["latencyMs"] > 0 for a in found[0]["attempts"])
    assert _sample("gateway_webhook_deliveries_total", outcome="delivered") == delivered_before + 1
    assert _sample("gateway_webhook_attempts_total", result="http_error") == errors_before + 2


async def test_a_receiver_that_hangs_is_cut_off_by_the_timeout_and_retried(
    gql: GraphQLClient, db: Database, worker: DeliveryWorker, settings: Settings
) -> None:
    with receiver([HANG]) as hooks:
        await _fire_one(gql, hooks.url)
        received = await _wait(hooks, 2)
        found = await _settled(gql)
    assert len(received) == 2
    assert received[0].headers["webhook-id"] == received[1].headers["webhook-id"]
    attempts = found[0]["attempts"]
    timeout = settings.gateway_webhook_timeout_seconds
    assert [(a["statusCode"], a["error"]) for a in attempts] == [
        (None, f"no answer within {timeout:g} s"),
        (200, None),
    ]
    assert timeout * 1000 <= attempts[0]["latencyMs"] < timeout * 1000 + 500
    assert found[0]["status"] == "DELIVERED"


async def test_a_claim_of_a_process_that_died_lapses_and_another_delivers(
    gql: GraphQLClient, db: Database, settings: Settings
) -> None:
    with receiver() as hooks:
        await _fire_one(gql, hooks.url)
        # A process claims the delivery and dies before sending (nothing recorded).
        claimed = await deliveries.claim(db, 10, 0.5)
        assert len(claimed) == 1
        running = DeliveryWorker(db, settings)
        running.start()
        try:
            assert await deliveries.claim(db, 10, 0.5) == []  # held by the dead claim
            await asyncio.sleep(0.2)  # the worker's rounds see it pending
            assert 0.1 < _sample("gateway_webhook_oldest_pending_seconds") < 30
            received = await _wait(hooks, 1)
            found = await _settled(gql)
            for _ in range(20):  # the round that delivered it updates the gauge last
                if _sample("gateway_webhook_oldest_pending_seconds") == 0.0:
                    break
                await asyncio.sleep(0.05)
        finally:
            await running.stop()
    assert len(received) == 1
    assert found[0]["status"] == "DELIVERED"
    assert [a["statusCode"] for a in found[0]["attempts"]] == [200]
    assert _sample("gateway_webhook_oldest_pending_seconds") == 0.0


async def test_replay_from_the_command_line_sends_the_event_again(
    gql: GraphQLClient, db: Database, worker: DeliveryWorker, database_url: str
) -> None:
    with receiver() as hooks:
        secret = await _fire_one(gql, hooks.url)
        first = await _wait(hooks, 1)
        await _settled(gql)
        event_id = first[0].headers["webhook-id"]
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "gateway.cli", "webhooks", "replay", event_id],
            env={**os.environ, "DATABASE_URL": database_url},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert f"queued event {event_id} for 1 endpoint(s)" in done.stdout
        again = await _wait(hooks, 2)
    assert [r.headers["webhook-id"] for r in again] == [event_id, event_id]
    Webhook(secret).verify(again[1].body, again[1].headers)
    missing = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "gateway.cli",
            "webhooks",
            "replay",
            "0" * 8 + "-0000-0000-0000-" + "0" * 12,
        ],
        env={**os.environ, "DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 1
    assert await db.fetchval("SELECT count(*) FROM webhook_deliveries") == 1


@pytest.fixture
async def production_gql(settings: Settings, db: Database, secret_key: str) -> AsyncIterator[Any]:
    prod = settings.model_copy(update={"gateway_env": "production"})
    application = create_app(prod, settings.database_url or "")
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(application.router.lifespan_context(application))
        transport = httpx.ASGITransport(app=application)
        http = await stack.enter_async_context(
            httpx.AsyncClient(transport=transport, base_url="http://gateway")
        )
        client = GraphQLClient(http)
        client.token = secret_key
        yield client


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("https://127.0.0.1/hooks", "must not point to a loopback, link-local or private address"),
        ("https://10.0.0.1/hooks", "must not point to a loopback, link-local or private address"),
        ("https://169.254.169.254/latest", "must not point to a loopback"),
        ("https://[::1]:8443/", "must not point to a loopback"),
        ("https://localhost/hooks", "must not point to a loopback"),
        ("http://hooks.example.com/", "url must use https"),
        ("ftp://hooks.example.com/", "url must be an http(s) URL with a host"),
    ],
)
async def test_production_refuses_private_addresses_and_plain_http(
    production_gql: GraphQLClient, db: Database, url: str, message: str
) -> None:
    result = await create_endpoint(production_gql, url)
    assert result["__typename"] == "InvalidInput"
    assert result["field"] == ["input", "url"]
    assert message in result["message"]
    assert await db.fetchval("SELECT count(*) FROM webhook_endpoints") == 0


async def test_every_resolved_address_is_checked_before_anything_is_sent() -> None:
    production = AddressPolicy(https_only=True, allow_private=False)
    with receiver() as hooks:
        port = hooks.url.split(":")[2].split("/")[0]
        async with sending.http_client(1.0) as client:
            refused = await sending.post(
                client, f"http://localhost:{port}/hooks", {}, "{}", production, 1.0
            )
            allowed = await sending.post(
                client,
                f"http://localhost:{port}/hooks",
                {},
                "{}",
                AddressPolicy(https_only=False, allow_private=True),
                1.0,
            )
        assert refused.result == "refused"
        assert refused.error is not None and "non-public address" in refused.error
        assert allowed.result == "success"
        assert len(hooks.requests) == 1  # only the allowed one reached the receiver
        assert hooks.requests[0].headers["host"] == f"localhost:{port}"


async def test_the_claim_goes_customer_by_customer_within_its_limit(
    gql: GraphQLClient, db: Database
) -> None:
    """One customer's deliveries per claim statement (on Citus, its shard), never more than
    the limit in all, and a claimed delivery is not claimed again while its claim holds."""
    await setup_pricing(gql, CREDITS_PRICING)
    subs = [await customer_on_plan(gql, f"user-{i}", "daily_plan") for i in range(3)]
    await create_endpoint(gql, "https://hooks.example.com/a")
    await create_endpoint(gql, "https://hooks.example.com/b")
    await create_alert(gql, threshold={"usedAbove": 10})
    for i, sub in enumerate(subs):
        result = await record(
            gql,
            target={"usageMeterSlug": "credits"},
            subscriptionId=sub,
            amount=10,
            transactionId=f"x{i}",
        )
        assert result["__typename"] == "UsageEventRecorded"
    assert await db.fetchval("SELECT count(*) FROM webhook_deliveries") == 6  # 3 x 2 endpoints
    first = await deliveries.claim(db, 3, 60)
    second = await deliveries.claim(db, 3, 60)
    assert (len(first), len(second)) == (3, 3)
    assert len({d.id for d in first + second}) == 6
    assert await deliveries.claim(db, 3, 60) == []
    assert await db.fetchval("SELECT sum(attempts) FROM webhook_deliveries") == 6
