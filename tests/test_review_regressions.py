"""Regressions found in review: grant ordering, batch order, distinct keys, retries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gateway.billing.reconcile import reconcile
from gateway.storage.db import Database
from tests.factories import (
    CREATE_USAGE_EVENTS,
    balance,
    customer_on_plan,
    ok,
    record,
    setup_pricing,
)

GRANT = """mutation($s: ID!, $a: Int!) { grantUsageCredits(input: {subscriptionId: $s,
             usageMeterSlug: "generations", amount: $a}) { __typename } }"""


async def test_a_grant_covers_only_events_written_after_it(gql, db: Database) -> None:
    await setup_pricing(gql)
    sub_id = await customer_on_plan(gql, "user-1", "free_monthly")  # 10 credits a month
    soon = (datetime.now(UTC) + timedelta(minutes=4)).isoformat()
    first = await record(gql, subscriptionId=sub_id, amount=20, transactionId="f", usageDate=soon)
    assert first["balance"]["availableBalance"] == -10
    granted = ok(await gql(GRANT, {"s": sub_id, "a": 50}), "grantUsageCredits")
    assert granted == {"__typename": "UsageCreditsGranted"}
    # The event was written before the grant existed: it stays overage, and a recomputation
    # agrees with what was stored.
    assert await reconcile(db) == []
    later = await record(gql, subscriptionId=sub_id, amount=5, transactionId="g")
    assert later["balance"]["availableBalance"] == 35
    assert await reconcile(db) == []


def _item(sub_id: str, tx: str, amount: int, target: dict[str, str], **more: object) -> dict:
    return {
        "subscriptionId": sub_id,
        "transactionId": tx,
        "amount": amount,
        "target": target,
        **more,
    }


async def test_batch_duplicates_through_different_targets_behave_sequentially(gql) -> None:
    await setup_pricing(gql)
    sub_id = await customer_on_plan(gql, "user-1", "free_monthly")
    meter = {"usageMeterSlug": "generations"}
    price = {"priceSlug": "generations_overage"}
    replay = ok(
        await gql(
            CREATE_USAGE_EVENTS,
            {"input": [_item(sub_id, "t", 5, meter), _item(sub_id, "t", 5, price)]},
        ),
        "createUsageEvents",
    )
    assert [(r["__typename"], r["replayed"]) for r in replay] == [
        ("UsageEventRecorded", False),
        ("UsageEventRecorded", True),
    ]
    conflict = ok(
        await gql(
            CREATE_USAGE_EVENTS,
            {"input": [_item(sub_id, "u", 5, meter), _item(sub_id, "u", 7, price)]},
        ),
        "createUsageEvents",
    )
    assert [r["__typename"] for r in conflict] == ["UsageEventRecorded", "IdempotencyConflict"]
    assert conflict[1]["existingEvent"]["amount"] == 5


async def test_batch_require_balance_is_first_come_first_served(gql, db: Database) -> None:
    await setup_pricing(gql)
    sub_id = await customer_on_plan(gql, "user-1", "free_monthly")  # 10 credits
    results = ok(
        await gql(
            CREATE_USAGE_EVENTS,
            {
                "input": [
                    _item(sub_id, "a", 10, {"usageMeterSlug": "generations"}, requireBalance=True),
                    _item(
                        sub_id, "b", 10, {"priceSlug": "generations_discount"}, requireBalance=True
                    ),
                ]
            },
        ),
        "createUsageEvents",
    )
    assert [r["__typename"] for r in results] == ["UsageEventRecorded", "InsufficientBalance"]
    assert await db.fetchval("SELECT array_agg(transaction_id) FROM usage_events") == ["a"]


async def test_numerically_equal_properties_are_one_distinct_set(gql, db: Database) -> None:
    await setup_pricing(gql)
    sub_id = await customer_on_plan(gql, "user-1", "pro_monthly")
    target = {"usageMeterSlug": "unique_users"}
    await record(
        gql,
        subscriptionId=sub_id,
        amount=1,
        transactionId="a",
        target=target,
        properties={"u": 1, "tags": [2.0, "x"]},
    )
    again = await record(
        gql,
        subscriptionId=sub_id,
        amount=1,
        transactionId="b",
        target=target,
        properties={"tags": [2, "x"], "u": 1.0},
    )
    assert again["balance"]["usedBalance"] == 1
    assert await db.fetchval("SELECT array_agg(consumed ORDER BY seq) FROM usage_events") == [1, 0]


async def test_a_repeated_distinct_set_needs_no_balance(gql, db: Database) -> None:
    await setup_pricing(gql)
    sub_id = await customer_on_plan(gql, "user-1", "pro_monthly")  # 3 unique users a month
    target = {"usageMeterSlug": "unique_users"}
    for i in range(3):
        await record(
            gql,
            subscriptionId=sub_id,
            amount=1,
            transactionId=f"u{i}",
            target=target,
            properties={"user": i},
            requireBalance=True,
        )
    assert (await balance(gql, "unique_users"))["availableBalance"] == 0
    repeat = await record(
        gql,
        subscriptionId=sub_id,
        amount=1,
        transactionId="again",
        target=target,
        properties={"user": 0},
        requireBalance=True,
    )
    assert repeat["__typename"] == "UsageEventRecorded"
    new_user = await record(
        gql,
        subscriptionId=sub_id,
        amount=1,
        transactionId="new",
        target=target,
        properties={"user": 9},
        requireBalance=True,
    )
    assert (new_user["__typename"], new_user["required"]) == ("InsufficientBalance", 1)


async def test_a_meter_retry_replays_after_the_default_price_changed(gql, db: Database) -> None:
    await setup_pricing(gql)
    sub_id = await customer_on_plan(gql, "user-1", "pro_monthly")
    first = await record(gql, subscriptionId=sub_id, amount=2, transactionId="op")
    async with db.transaction() as conn:
        await conn.execute(
            "UPDATE prices SET is_default = false, active = false"
            " WHERE slug = 'generations_overage'"
        )
        await conn.execute(
            "UPDATE prices SET is_default = true WHERE slug = 'generations_no_charge'"
        )
    retry = await record(gql, subscriptionId=sub_id, amount=2, transactionId="op")
    assert (retry["__typename"], retry["replayed"]) == ("UsageEventRecorded", True)
    assert retry["usageEvent"]["priceId"] == first["usageEvent"]["priceId"]
    # Naming the archived price: a retry is still a replay; a new event is refused.
    by_price = await record(
        gql,
        subscriptionId=sub_id,
        amount=2,
        transactionId="op",
        target={"priceSlug": "generations_overage"},
    )
    assert by_price["replayed"] is True
    refused = await record(
        gql,
        subscriptionId=sub_id,
        amount=2,
        transactionId="op2",
        target={"priceSlug": "generations_overage"},
    )
    assert (refused["code"], refused["message"]) == (
        "INVALID_INPUT",
        "price generations_overage is archived",
    )
