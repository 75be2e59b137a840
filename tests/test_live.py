"""GraphQL subscriptions over WebSocket (graphql-transport-ws) between real processes.

A subscriber on one gateway process receives balance changes recorded through another (the
database's LISTEN/NOTIFY), in order and ending with the final value; access follows the
queries' rules; a revoked token ends its subscription; a PostgreSQL restart under open
subscriptions does not end them.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import httpx
from websockets.asyncio.client import connect

from gateway.billing.balances import grant_usage_credits
from gateway.callers.auth import create_api_key
from gateway.live.feeds import balance_feed
from gateway.live.hub import Hub
from gateway.live.reads import SharedReads
from gateway.live.sessions import Session
from gateway.settings import Settings
from gateway.storage.db import Database, asyncpg_dsn
from gateway.storage.listener import Listener
from gateway.storage.migrate import upgrade
from tests.alert_factories import CREDITS_PRICING, create_alert
from tests.conftest import GraphQLClient
from tests.factories import CREATE_USAGE_EVENT, USAGE_BALANCE, customer_on_plan, session_token
from tests.factories import setup_pricing as setup_model
from tests.live_client import PROTOCOL, USAGE_BALANCE_SUBSCRIPTION, Live
from tests.own_postgres import OwnPostgres
from tests.servers import gateway_processes


async def _record(client: httpx.AsyncClient, base: str, key: str, sub: str, tx: str) -> Any:
    response = await client.post(
        base + "/graphql",
        json={
            "query": CREATE_USAGE_EVENT,
            "variables": {
                "input": {
                    "target": {"usageMeterSlug": "credits"},
                    "subscriptionId": sub,
                    "amount": 1,
                    "transactionId": tx,
                }
            },
        },
        headers={"Authorization": f"Bearer {key}"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    result = response.json()["data"]["createUsageEvent"]
    assert result["__typename"] == "UsageEventRecorded", result
    return result


async def _balances_until(live: Live, op_id: str, used: int, seconds: float = 20) -> list[int]:
    """usedBalance of every message of ``op_id`` until one reaches ``used``."""
    seen: list[int] = []
    async with asyncio.timeout(seconds):
        while not seen or seen[-1] < used:
            message = await live.receive(seconds)
            assert message["type"] == "next" and message["id"] == op_id, message
            assert "errors" not in message["payload"], message
            seen.append(message["payload"]["data"]["usageBalance"]["usedBalance"])
    return seen


def _variables(sub: str, customer: str | None = "user-1") -> dict[str, Any]:
    return {"meter": "credits", "customer": customer, "sub": sub}


async def test_a_subscriber_on_one_process_follows_events_recorded_on_another(
    gql: GraphQLClient, secret_key: str, database_url: str
) -> None:
    await setup_model(gql, CREDITS_PRICING)
    sub = await customer_on_plan(gql, "user-1", "daily_plan")
    token = await session_token(gql, "user-1")
    with gateway_processes(database_url, 2) as (a, b):
        async with Live.open(a, token) as live, httpx.AsyncClient() as client:
            await live.subscribe("1", USAGE_BALANCE_SUBSCRIPTION, _variables(sub, None))
            first = await live.receive()
            assert first["payload"]["data"]["usageBalance"] | {"billingPeriodStart": None} == {
                "usageMeter": {"slug": "credits"},
                "subscriptionId": sub,
                "availableBalance": 1000,
                "usedBalance": 0,
                "balanceLimit": 1000,
                "billingPeriodStart": None,
                "billingPeriodEnd": first["payload"]["data"]["usageBalance"]["billingPeriodEnd"],
            }
            await asyncio.gather(*(_record(client, b, secret_key, sub, f"t{i}") for i in range(50)))
            seen = await _balances_until(live, "1", 50)
            # In order (each read after the previous one), ending with the final value; a
            # burst is coalesced, so there are at most 50 messages.
            assert seen == sorted(set(seen)) and seen[-1] == 50 and len(seen) <= 50
            assert await live.nothing_within(0.5)
    final = (await gql(USAGE_BALANCE, {"meter": "credits", "customer": "user-1"})).data
    assert final["usageBalance"]["usedBalance"] == 50


async def test_another_customers_balance_is_one_error_and_nothing_else(
    gql: GraphQLClient, secret_key: str, database_url: str
) -> None:
    await setup_model(gql, CREDITS_PRICING)
    await customer_on_plan(gql, "user-1", "daily_plan")
    other = await customer_on_plan(gql, "user-2", "daily_plan")
    token = await session_token(gql, "user-1")
    with gateway_processes(database_url, 1) as (a,):
        async with Live.open(a, token) as live, httpx.AsyncClient() as client:
            await live.subscribe("1", USAGE_BALANCE_SUBSCRIPTION, _variables(other, "user-2"))
            await live.subscribe("2", USAGE_BALANCE_SUBSCRIPTION, _variables(other, None))
            messages = [await live.receive() for _ in range(4)]
            await _record(client, a, secret_key, other, "t1")  # no balance may follow
            assert await live.nothing_within(1.0)
    by_id = sorted(messages, key=lambda m: (m["id"], m["type"] != "next"))
    assert [(m["id"], m["type"]) for m in by_id] == [
        ("1", "next"),
        ("1", "complete"),
        ("2", "next"),
        ("2", "complete"),
    ]
    for message in (by_id[0], by_id[2]):
        assert message["payload"]["data"] is None
        assert [(e["message"], e["extensions"]["code"]) for e in message["payload"]["errors"]] == [
            (
                "no usage balance of meter credits for this customer and subscription",
                "NOT_FOUND",
            )
        ]


async def test_a_revoked_token_ends_its_subscription(
    gql: GraphQLClient, secret_key: str, database_url: str
) -> None:
    await setup_model(gql, CREDITS_PRICING)
    sub = await customer_on_plan(gql, "user-1", "daily_plan")
    token = await session_token(gql, "user-1")
    with gateway_processes(database_url, 1) as (a,):
        async with Live.open(a, token) as live, httpx.AsyncClient() as client:
            await live.subscribe("1", USAGE_BALANCE_SUBSCRIPTION, _variables(sub, None))
            assert (await _balances_until(live, "1", 0)) == [0]
            revoked = await gql(
                'mutation { revokeCustomerSessions(input: {customerExternalId: "user-1"})'
                " { __typename } }"
            )
            assert revoked.data == {
                "revokeCustomerSessions": {"__typename": "CustomerSessionsRevoked"}
            }
            await _record(client, a, secret_key, sub, "after-revocation")
            ended = await live.receive()
            done = await live.receive()
            assert await live.nothing_within(0.5)
    assert ended["type"] == "next" and ended["payload"]["data"] is None
    assert [(e["message"], e["extensions"]["code"]) for e in ended["payload"]["errors"]] == [
        ("the subscription ended: the session token was revoked", "UNAUTHENTICATED")
    ]
    assert done == {"id": "1", "type": "complete"}


async def test_connection_init_without_a_valid_credential_is_refused(
    gql: GraphQLClient, database_url: str
) -> None:
    with gateway_processes(database_url, 1, GATEWAY_SUBSCRIPTION_INIT_TIMEOUT_SECONDS="0.5") as (
        a,
    ):
        async with Live.open(a, None, ack=False) as live:
            assert await live.closed_with() == (4403, "Forbidden")
        async with Live.open(a, "sk_not-a-key", ack=False) as live:
            assert await live.closed_with() == (4403, "Forbidden")
        url = a.replace("http://", "ws://") + "/graphql"
        async with connect(url, subprotocols=[PROTOCOL]) as ws:  # never sends connection_init
            silent = Live(ws)
            assert await silent.closed_with() == (4408, "Connection initialisation timeout")


async def test_subscriptions_per_connection_are_bounded(
    gql: GraphQLClient, secret_key: str, database_url: str
) -> None:
    await setup_model(gql, CREDITS_PRICING)
    sub = await customer_on_plan(gql, "user-1", "daily_plan")
    with gateway_processes(database_url, 1, GATEWAY_MAX_SUBSCRIPTIONS_PER_CONNECTION="2") as (a,):
        async with Live.open(a, secret_key) as live:
            for op_id in ("1", "2", "3"):
                await live.subscribe(op_id, USAGE_BALANCE_SUBSCRIPTION, _variables(sub))
            messages = [await live.receive() for _ in range(3)]
            assert await live.nothing_within(0.5)
    assert sorted((m["id"], m["type"]) for m in messages) == [
        ("1", "next"),
        ("2", "next"),
        ("3", "error"),
    ]
    refused = next(m for m in messages if m["id"] == "3")
    assert [e["message"] for e in refused["payload"]] == ["Subscription limit reached"]


async def test_subscriptions_survive_a_postgresql_restart() -> None:
    pg = OwnPostgres()
    admin_url = pg.start()
    try:
        admin = await asyncpg.connect(asyncpg_dsn(admin_url))
        await admin.execute('CREATE DATABASE "live"')
        await admin.close()
        url = admin_url.replace("/postgres?", "/live?")
        await asyncio.to_thread(upgrade, url)
        db = Database(url, min_size=1, max_size=2)
        await db.connect()
        _, key = await create_api_key(db, "live")
        await db.close()
        with gateway_processes(url, 2) as (a, b):
            async with httpx.AsyncClient(base_url=a, timeout=30) as setup_http:
                gql = GraphQLClient(setup_http)
                gql.token = key
                await setup_model(gql, CREDITS_PRICING)
                sub = await customer_on_plan(gql, "user-1", "daily_plan")
            async with Live.open(a, key) as live, httpx.AsyncClient() as client:
                await live.subscribe("1", USAGE_BALANCE_SUBSCRIPTION, _variables(sub))
                assert await _balances_until(live, "1", 0) == [0]
                await _record(client, b, key, sub, "before")
                assert await _balances_until(live, "1", 1) == [1]
                await asyncio.to_thread(pg.stop_server)
                await asyncio.sleep(1)
                await asyncio.to_thread(pg.start_server)

                async def recorded(tx: str) -> None:
                    for _ in range(100):  # until the processes' pools reconnect
                        response = await client.post(
                            b + "/graphql",
                            json={
                                "query": CREATE_USAGE_EVENT,
                                "variables": {
                                    "input": {
                                        "target": {"usageMeterSlug": "credits"},
                                        "subscriptionId": sub,
                                        "amount": 1,
                                        "transactionId": tx,
                                    }
                                },
                            },
                            headers={"Authorization": f"Bearer {key}"},
                        )
                        if response.status_code == 200:
                            return
                        await asyncio.sleep(0.1)
                    raise AssertionError("the gateway did not answer after the restart")

                await recorded("after-1")
                seen = await _balances_until(live, "1", 2)
                await asyncio.sleep(6)  # past the listener's reconnection on every process
                await recorded("after-2")
                seen += await _balances_until(live, "1", 3)
                assert seen == [2, 3]
    finally:
        pg.close()


USAGE_ALERTS_SUBSCRIPTION = """
subscription($customer: String) {
  usageAlerts(customerExternalId: $customer) {
    type customerExternalId subscriptionId alert { percentUsed }
    balance { usageMeter { slug } usedBalance balanceLimit }
  }
}
"""


async def test_alert_events_reach_their_customers_subscribers_only(
    gql: GraphQLClient, secret_key: str, database_url: str
) -> None:
    await setup_model(gql, CREDITS_PRICING)
    sub = await customer_on_plan(gql, "user-1", "daily_plan")
    await customer_on_plan(gql, "user-2", "daily_plan")
    own = await session_token(gql, "user-1")
    other = await session_token(gql, "user-2")
    created = await create_alert(gql, threshold={"percentUsed": 1})
    assert created["__typename"] == "UsageAlertCreated"
    with gateway_processes(database_url, 2) as (a, b):
        async with (
            Live.open(a, secret_key) as admin,
            Live.open(a, own) as mine,
            Live.open(a, other) as theirs,
            httpx.AsyncClient() as client,
        ):
            await admin.subscribe("all", USAGE_ALERTS_SUBSCRIPTION, {"customer": None})
            await mine.subscribe("own", USAGE_ALERTS_SUBSCRIPTION, {"customer": None})
            await theirs.subscribe("own", USAGE_ALERTS_SUBSCRIPTION, {"customer": None})
            await asyncio.sleep(0.5)  # the subscriptions are registered
            for i in range(10):  # 10 of 1000 credits: 1 % used, the alert triggers once
                await _record(client, b, secret_key, sub, f"t{i}")
            expected = {
                "type": "TRIGGERED",
                "customerExternalId": "user-1",
                "subscriptionId": sub,
                "alert": {"percentUsed": 1.0},
                "balance": {
                    "usageMeter": {"slug": "credits"},
                    "usedBalance": 10,
                    "balanceLimit": 1000,
                },
            }
            for live, op_id in ((admin, "all"), (mine, "own")):
                message = await live.receive()
                assert message == {
                    "id": op_id,
                    "type": "next",
                    "payload": {"data": {"usageAlerts": expected}},
                }
                assert await live.nothing_within(0.3)
            assert await theirs.nothing_within(0.5)  # another customer's event: nothing


async def test_an_expired_token_ends_its_subscription(
    gql: GraphQLClient, secret_key: str, database_url: str
) -> None:
    await setup_model(gql, CREDITS_PRICING)
    sub = await customer_on_plan(gql, "user-1", "daily_plan")
    with gateway_processes(database_url, 1) as (a,):
        token = await session_token(gql, "user-1", seconds=3)
        async with Live.open(a, token) as live:
            await live.subscribe("1", USAGE_BALANCE_SUBSCRIPTION, _variables(sub, None))
            assert (await _balances_until(live, "1", 0)) == [0]
            # No change is needed: the expiry timer ends it.
            ended = await live.receive(seconds=6)
            done = await live.receive()
    assert ended["type"] == "next" and ended["payload"]["data"] is None
    assert [(e["message"], e["extensions"]["code"]) for e in ended["payload"]["errors"]] == [
        ("the subscription ended: session token expired", "UNAUTHENTICATED")
    ]
    assert done == {"id": "1", "type": "complete"}


async def test_a_client_that_does_not_read_is_dropped_not_buffered(
    gql: GraphQLClient, db: Database, settings: Settings, database_url: str
) -> None:
    await setup_model(gql, CREDITS_PRICING)
    sub = await customer_on_plan(gql, "user-1", "daily_plan")
    meter = await db.fetchval("SELECT id FROM usage_meters WHERE slug = 'credits'")
    key = (uuid.UUID(sub), meter)
    hub = Hub()
    listener = Listener(database_url)
    hub.attach(listener)
    await listener.start(wait=5)
    session = await Session.open(db, settings.token_secret(), f"Bearer {gql.token}")
    dropped = asyncio.Event()

    async def drop() -> None:
        dropped.set()

    feed = balance_feed(
        hub, SharedReads(db, settings.token_secret()), key, session, queue_size=2, on_overflow=drop
    )
    first = await anext(feed)
    assert first is not None and first.used_balance == 0
    # Three changes while the client reads nothing: the third finds the queue (2) full.
    for _ in range(3):
        await grant_usage_credits(db, sub, "credits", 1, None)  # NOTIFY at its commit
        await asyncio.sleep(0.3)
    await listener.stop()
    assert dropped.is_set()
    # The connection is closing: what was queued is dropped and the feed ends.
    rest = [row async for row in feed]
    assert rest == []
