"""Usage alerts: decided in the transaction of the change, at most once per period."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from standardwebhooks import Webhook

from gateway.settings import Settings
from gateway.storage.db import Database
from gateway.webhooks.worker import DeliveryWorker
from tests.alert_factories import (
    CREDITS_PRICING,
    alert_events,
    create_alert,
    create_endpoint,
)
from tests.conftest import GraphQLClient
from tests.factories import (
    CREATE_USAGE_EVENTS,
    customer_on_plan,
    ok,
    record,
    session_token,
    setup_pricing,
)
from tests.receiver import receiver

CREDITS = {"usageMeterSlug": "credits"}


@pytest.fixture
async def worker(db: Database, settings: Settings) -> AsyncIterator[DeliveryWorker]:
    running = DeliveryWorker(db, settings)
    running.start()
    yield running
    await running.stop()


async def _use(gql: GraphQLClient, sub: str, amount: int, tx: str) -> dict[str, Any]:
    result = await record(gql, target=CREDITS, subscriptionId=sub, amount=amount, transactionId=tx)
    assert result["__typename"] == "UsageEventRecorded", result
    return result


async def _grant(gql: GraphQLClient, sub: str, amount: int, expires_at: str) -> None:
    response = await gql(
        """mutation($s: ID!, $a: Int!, $e: DateTime) { grantUsageCredits(input: {
             subscriptionId: $s, usageMeterSlug: "credits", amount: $a, expiresAt: $e}) {
             __typename } }""",
        {"s": sub, "a": amount, "e": expires_at},
    )
    assert ok(response, "grantUsageCredits") == {"__typename": "UsageCreditsGranted"}


async def test_an_80_percent_alert_fires_once_resolves_on_a_grant_and_rearms_next_period(
    gql: GraphQLClient, db: Database, worker: DeliveryWorker
) -> None:
    await setup_pricing(gql, CREDITS_PRICING)
    # A daily plan whose first period ends in a few seconds.
    period_end = datetime.now(UTC) + timedelta(seconds=6)
    sub = await customer_on_plan(
        gql, "user-1", "daily_plan", (period_end - timedelta(days=1)).isoformat()
    )
    with receiver() as hooks:
        endpoint = await create_endpoint(gql, hooks.url)
        assert endpoint["__typename"] == "WebhookEndpointCreated"
        assert endpoint["secret"].startswith("whsec_")
        alert = await create_alert(gql, threshold={"percentUsed": 80})
        assert alert["__typename"] == "UsageAlertCreated"
        assert alert["alert"]["percentUsed"] == 80.0

        await _use(gql, sub, 790, "t1")
        assert await alert_events(db) == []
        crossing = await _use(gql, sub, 20, "t2")  # 790 -> 810 of 1,000
        assert crossing["balance"]["percentUsed"] == 81.0
        assert await alert_events(db) == [("triggered", 810)]
        await _use(gql, sub, 50, "t3")  # still above: nothing more
        assert await alert_events(db) == [("triggered", 810)]
        # 860 of 1,200: under 80% again
        await _grant(gql, sub, 200, period_end.isoformat())
        assert await alert_events(db) == [("triggered", 810), ("resolved", 860)]
        await _use(gql, sub, 200, "t4")  # 1,060 of 1,200: at most one TRIGGERED a period
        assert await alert_events(db) == [("triggered", 810), ("resolved", 860)]
        assert datetime.now(UTC) < period_end, "the machine was too slow for this test"

        await asyncio.sleep((period_end - datetime.now(UTC)).total_seconds() + 0.2)
        await _use(gql, sub, 790, "t5")  # the next period starts unfired
        assert len(await alert_events(db)) == 2
        await _use(gql, sub, 20, "t6")
        events = await alert_events(db)
        assert events == [("triggered", 810), ("resolved", 860), ("triggered", 810)]

        received = await asyncio.to_thread(hooks.wait_for, 3)
        await asyncio.sleep(0.3)  # and nothing after them
        assert len(hooks.requests) == 3
    verifier = Webhook(endpoint["secret"])
    bodies = [verifier.verify(r.body, r.headers) for r in received]
    ids = await db.fetch("SELECT id::text, type FROM usage_alert_events ORDER BY occurred_at")
    assert sorted(r.headers["webhook-id"] for r in received) == sorted(i["id"] for i in ids)
    assert sorted((b["type"], b["data"]["balance"]["usedBalance"]) for b in bodies) == [
        ("usage_alert.resolved", 860),
        ("usage_alert.triggered", 810),
        ("usage_alert.triggered", 810),
    ]
    first = next(b for b in bodies if b["data"]["id"] == ids[0]["id"])
    assert first["data"]["type"] == "TRIGGERED"
    assert first["data"]["alert"]["id"] == alert["alert"]["id"]
    assert first["data"]["customerExternalId"] == "user-1"
    assert first["data"]["subscriptionId"] == sub
    assert first["data"]["balance"]["balanceLimit"] == 1000
    assert first["data"]["balance"]["availableBalance"] == 190


async def test_a_batch_fires_on_the_balance_of_the_item_that_crossed(
    gql: GraphQLClient, db: Database
) -> None:
    await setup_pricing(gql, CREDITS_PRICING)
    sub = await customer_on_plan(gql, "user-1", "daily_plan")
    await create_alert(gql, threshold={"percentUsed": 80})
    await _use(gql, sub, 100, "first")  # issues the period's grant: later groups are steady
    items = [
        {"target": CREDITS, "subscriptionId": sub, "amount": 200, "transactionId": f"b{i}"}
        for i in range(5)
    ]
    results = ok(await gql(CREATE_USAGE_EVENTS, {"input": items}), "createUsageEvents")
    assert [r["balance"]["usedBalance"] for r in results] == [300, 500, 700, 900, 1100]
    # Evaluated once, after the set-based statement, on each item's balance in order: the event
    # carries the balance of the item that reached 80% (900), as one-by-one events would.
    assert await alert_events(db) == [("triggered", 900)]


async def test_thresholds_used_above_and_available_below_and_one_customer_only(
    gql: GraphQLClient, db: Database
) -> None:
    await setup_pricing(gql, CREDITS_PRICING)
    sub1 = await customer_on_plan(gql, "user-1", "daily_plan")
    sub2 = await customer_on_plan(gql, "user-2", "daily_plan")
    only_one = await create_alert(gql, threshold={"usedAbove": 100}, customerExternalId="user-1")
    assert only_one["alert"]["customerExternalId"] == "user-1"
    assert only_one["alert"]["usedAbove"] == 100
    await create_alert(gql, threshold={"availableBelow": 0})
    await _use(gql, sub2, 150, "a")  # user-2: the usedAbove alert is not theirs
    assert await alert_events(db) == []
    await _use(gql, sub1, 100, "a")  # reaches 100
    await _use(gql, sub2, 850, "b")  # available 0: falls to it
    rows = await db.fetch(
        "SELECT c.external_id, a.used_above, a.available_below, e.type"
        " FROM usage_alert_events e JOIN usage_alerts a ON a.id = e.alert_id"
        " JOIN customers c ON c.id = e.customer_id ORDER BY e.occurred_at"
    )
    assert [tuple(r) for r in rows] == [
        ("user-1", 100, None, "triggered"),
        ("user-2", None, 0, "triggered"),
    ]


async def test_a_change_that_rolls_back_leaves_no_alert_event(
    gql: GraphQLClient, db: Database, worker: DeliveryWorker
) -> None:
    await setup_pricing(gql, CREDITS_PRICING)
    sub = await customer_on_plan(gql, "user-1", "daily_plan")
    await create_alert(gql, threshold={"percentUsed": 80})
    with receiver() as hooks:
        await create_endpoint(gql, hooks.url)
        with pytest.raises(RuntimeError, match="roll back"):
            async with db.transaction() as conn:
                result = await conn.fetchval(
                    "SELECT record_usage_event((SELECT customer_id FROM subscriptions WHERE id = $1),"
                    " gen_random_uuid(), NULL, $1, 'usageMeterSlug',"
                    " 'credits', 900, 'tx', NULL, NULL, false, interval '35 days',"
                    " interval '5 minutes')",
                    uuid.UUID(sub),
                )
                assert result["status"] == "recorded"
                # written in this transaction, with its delivery
                assert await conn.fetchval("SELECT count(*) FROM usage_alert_events") == 1
                assert await conn.fetchval("SELECT count(*) FROM webhook_deliveries") == 1
                raise RuntimeError("roll back")
        await asyncio.sleep(0.5)  # ten polls of the worker
        assert hooks.requests == []
    assert await db.fetchval("SELECT count(*) FROM usage_alert_events") == 0
    assert await db.fetchval("SELECT count(*) FROM webhook_deliveries") == 0


async def test_a_deleted_alert_fires_no_more(gql: GraphQLClient, db: Database) -> None:
    await setup_pricing(gql, CREDITS_PRICING)
    sub = await customer_on_plan(gql, "user-1", "daily_plan")
    alert = await create_alert(gql, threshold={"usedAbove": 10})
    response = await gql(
        "mutation($id: ID!) { deleteUsageAlert(input: {alertId: $id}) { __typename"
        " ... on UsageAlertDeleted { alertId } ... on UserError { code } } }",
        {"id": alert["alert"]["id"]},
    )
    assert ok(response, "deleteUsageAlert") == {
        "__typename": "UsageAlertDeleted",
        "alertId": alert["alert"]["id"],
    }
    again = await gql(
        "mutation($id: ID!) { deleteUsageAlert(input: {alertId: $id}) { __typename"
        " ... on UserError { code field } } }",
        {"id": alert["alert"]["id"]},
    )
    assert ok(again, "deleteUsageAlert") == {
        "__typename": "NotFound",
        "code": "NOT_FOUND",
        "field": ["input", "alertId"],
    }
    await _use(gql, sub, 50, "a")
    assert await alert_events(db) == []


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (
            {"usageMeterSlug": "nope", "threshold": {"percentUsed": 80}},
            ("NotFound", ["input", "usageMeterSlug"]),
        ),
        (
            {"threshold": {"percentUsed": 80}, "customerExternalId": "nobody"},
            ("NotFound", ["input", "customerExternalId"]),
        ),
        (
            {"threshold": {"percentUsed": 0}},
            ("InvalidInput", ["input", "threshold", "percentUsed"]),
        ),
        (
            {"threshold": {"usedAbove": -1}},
            ("InvalidInput", ["input", "threshold", "usedAbove"]),
        ),
    ],
)
async def test_create_usage_alert_refusals_write_nothing(
    gql: GraphQLClient, db: Database, fields: dict[str, Any], expected: tuple[str, list[str]]
) -> None:
    await setup_pricing(gql, CREDITS_PRICING)
    result = await create_alert(gql, **fields)
    assert (result["__typename"], result["field"]) == expected
    assert await db.fetchval("SELECT count(*) FROM usage_alerts") == 0


async def test_exactly_one_threshold_and_a_secret_key_are_required(
    gql: GraphQLClient, db: Database
) -> None:
    await setup_pricing(gql, CREDITS_PRICING)
    await customer_on_plan(gql, "user-1", "daily_plan")
    two = await gql(
        'mutation { createUsageAlert(input: {usageMeterSlug: "credits",'
        " threshold: {percentUsed: 80, usedAbove: 5}}) { __typename } }"
    )
    assert two.errors is not None and "exactly one" in two.errors[0]["message"].lower()
    token = await session_token(gql, "user-1")
    refused = await gql(
        'mutation { createUsageAlert(input: {usageMeterSlug: "credits",'
        " threshold: {percentUsed: 80}}) { __typename } }",
        token=token,
    )
    assert refused.status == 403
    assert refused.errors is not None
    assert refused.errors[0]["extensions"]["code"] == "FORBIDDEN"
    assert await db.fetchval("SELECT count(*) FROM usage_alerts") == 0


async def test_a_period_that_ends_triggered_resolves_at_the_first_change_of_the_next(
    gql: GraphQLClient, db: Database
) -> None:
    await setup_pricing(gql, CREDITS_PRICING)
    period_end = datetime.now(UTC) + timedelta(seconds=4)
    sub = await customer_on_plan(
        gql, "user-1", "daily_plan", (period_end - timedelta(days=1)).isoformat()
    )
    await create_alert(gql, threshold={"usedAbove": 100})
    await _use(gql, sub, 150, "a")
    assert await alert_events(db) == [("triggered", 150)]
    assert datetime.now(UTC) < period_end, "the machine was too slow for this test"
    await asyncio.sleep((period_end - datetime.now(UTC)).total_seconds() + 0.2)
    await _use(gql, sub, 10, "b")  # the new period: 10 used, under the threshold
    await _use(gql, sub, 90, "c")  # 100: the new period's own TRIGGERED
    rows = await db.fetch(
        "SELECT type, period_start < $1 AS earlier FROM usage_alert_events"
        " ORDER BY occurred_at, id",
        period_end - timedelta(seconds=1),
    )
    assert [(r["type"], r["earlier"]) for r in rows] == [
        ("triggered", True),
        ("resolved", True),
        ("triggered", False),
    ]
    assert await alert_events(db) == [("triggered", 150), ("resolved", 10), ("triggered", 100)]


async def test_a_batch_recorded_item_by_item_fires_on_the_crossing_balance_too(
    gql: GraphQLClient, db: Database
) -> None:
    await setup_pricing(gql, CREDITS_PRICING)
    sub = await customer_on_plan(gql, "user-1", "daily_plan")
    await create_alert(gql, threshold={"percentUsed": 80})
    # The first events of the period (its grant not yet issued): recorded one by one.
    items = [
        {"target": CREDITS, "subscriptionId": sub, "amount": 300, "transactionId": f"s{i}"}
        for i in range(4)
    ]
    results = ok(await gql(CREATE_USAGE_EVENTS, {"input": items}), "createUsageEvents")
    assert [r["balance"]["usedBalance"] for r in results] == [300, 600, 900, 1200]
    assert await alert_events(db) == [("triggered", 900)]  # the item that reached 80%
    # The deferral ends with the batch: the next single event is evaluated by itself.
    await _grant(gql, sub, 1000, (datetime.now(UTC) + timedelta(hours=1)).isoformat())
    assert await alert_events(db) == [("triggered", 900), ("resolved", 1200)]
