"""createUsageEvent and createUsageEvents: resolution, caller rules, checks, idempotency."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gateway.storage.db import Database, start_counting
from tests.factories import (
    CREATE_USAGE_EVENT,
    CREATE_USAGE_EVENTS,
    balance,
    create_customer,
    customer_on_plan,
    ok,
    record,
    session_token,
    setup_pricing,
    subscribe,
)


async def snapshot(db: Database) -> dict[str, Any]:
    """Everything a usage event can write; compared before and after refused requests."""
    row = await db.fetchrow(
        """SELECT (SELECT count(*) FROM usage_events) AS events,
                  (SELECT count(*) FROM usage_totals) AS totals,
                  (SELECT coalesce(sum(used), 0) FROM usage_totals) AS used,
                  (SELECT coalesce(sum(consumed), 0) FROM credit_grants) AS consumed,
                  (SELECT count(*) FROM credit_grants) AS grants,
                  (SELECT count(*) FROM usage_distinct_keys) AS distinct_keys"""
    )
    assert row is not None
    return dict(row)


@pytest.fixture
async def pro(gql) -> dict[str, Any]:
    """The test pricing model and user-1 on the pro plan (1,000 monthly + 100 one-time)."""
    model = await setup_pricing(gql)
    sub_id = await customer_on_plan(gql, "user-1", "pro_monthly")
    meters = {m["slug"]: m for m in model["usageMeters"]}
    prices = {p["slug"]: p["id"] for m in model["usageMeters"] for p in m["prices"]}
    return {"sub": sub_id, "meters": meters, "prices": prices, "model": model}


def secret_input(pro: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {
        "target": {"usageMeterSlug": "generations"},
        "subscriptionId": pro["sub"],
        "amount": 1,
        "transactionId": "tx-1",
        **fields,
    }


async def test_meter_slug_resolves_to_the_default_price(gql, pro) -> None:
    result = await record(gql, **secret_input(pro, amount=5))
    assert result["__typename"] == "UsageEventRecorded"
    assert result["replayed"] is False
    event = result["usageEvent"]
    assert event["priceId"] == pro["prices"]["generations_overage"]
    assert event["usageMeterId"] == pro["meters"]["generations"]["id"]
    assert event["subscriptionId"] == pro["sub"]
    assert event["amount"] == 5
    assert event["transactionId"] == "tx-1"
    assert event["properties"] == {}
    assert event["billingPeriodId"] is not None
    # 1,000 monthly + 100 one-time credits, 5 used.
    bal = result["balance"]
    assert (bal["availableBalance"], bal["usedBalance"], bal["balanceLimit"]) == (1095, 5, 1100)
    assert bal["usageMeter"] == {"slug": "generations"}


async def test_meter_without_a_paid_default_resolves_to_no_charge(gql, pro) -> None:
    result = await record(
        gql,
        **secret_input(pro, target={"usageMeterSlug": "unique_users"}, properties={"user": "a"}),
    )
    assert result["usageEvent"]["priceId"] == pro["prices"]["unique_users_no_charge"]


@pytest.mark.parametrize(
    ("kind", "key"),
    [
        ("priceSlug", "generations_discount"),
        ("priceId", "generations_discount"),
        ("usageMeterId", "generations"),
    ],
)
async def test_every_target_kind_resolves(gql, pro, kind: str, key: str) -> None:
    value = {
        "priceSlug": key,
        "priceId": pro["prices"].get(key),
        "usageMeterId": pro["meters"][key]["id"] if key in pro["meters"] else None,
    }[kind]
    result = await record(gql, **secret_input(pro, target={kind: value}))
    expected = "generations_discount" if kind.startswith("price") else "generations_overage"
    assert result["usageEvent"]["priceId"] == pro["prices"][expected]


@pytest.mark.parametrize("target", [{}, {"usageMeterSlug": "generations", "priceSlug": "x"}])
async def test_one_of_target_is_enforced_by_validation(gql, db, pro, target) -> None:
    before = await snapshot(db)
    response = await gql(CREATE_USAGE_EVENT, {"input": secret_input(pro, target=target)})
    assert response.data is None
    assert response.errors is not None and len(response.errors) == 1
    assert "exactly one key" in response.errors[0]["message"]
    assert await snapshot(db) == before


async def test_secret_key_must_give_subscription_transaction_and_amount(gql, db, pro) -> None:
    before = await snapshot(db)
    result = await record(gql)
    assert result["__typename"] == "InvalidInput"
    assert result["code"] == "INVALID_INPUT"
    assert result["message"] == (
        "a secret key must give subscriptionId, transactionId, amount explicitly"
    )
    assert result["field"] == ["input", "subscriptionId"]
    assert await snapshot(db) == before


async def test_customer_token_gets_smart_defaults(gql, pro) -> None:
    token = await session_token(gql, "user-1")
    result = await record(gql, token=token)
    assert result["__typename"] == "UsageEventRecorded"
    event = result["usageEvent"]
    assert event["amount"] == 1
    assert event["subscriptionId"] == pro["sub"]
    assert event["transactionId"].startswith("gen_")
    second = await record(gql, token=token)
    assert second["usageEvent"]["transactionId"] != event["transactionId"]
    assert second["balance"]["usedBalance"] == 2


async def test_customer_token_may_target_only_meters_and_default_prices(gql, db, pro) -> None:
    token = await session_token(gql, "user-1")
    allowed = await record(gql, token=token, target={"priceSlug": "generations_overage"})
    assert allowed["__typename"] == "UsageEventRecorded"
    before = await snapshot(db)
    refused = await record(gql, token=token, target={"priceSlug": "generations_discount"})
    assert refused == {
        "__typename": "Forbidden",
        "code": "FORBIDDEN",
        "message": "a customer session may only target a meter or its default price",
        "field": ["input", "target", "priceSlug"],
    }
    assert await snapshot(db) == before


@pytest.mark.parametrize(
    ("fields", "message", "field"),
    [
        ({"amount": 0}, "amount must be a positive integer", ["input", "amount"]),
        ({"amount": -3}, "amount must be a positive integer", ["input", "amount"]),
        (
            {"transactionId": ""},
            "transactionId must be 1 to 255 characters",
            ["input", "transactionId"],
        ),
        (
            {"transactionId": "x" * 256},
            "transactionId must be 1 to 255 characters",
            ["input", "transactionId"],
        ),
        ({"properties": [1, 2]}, "properties must be a JSON object", ["input", "properties"]),
        (
            {"properties": {"blob": "x" * 9000}},
            "properties must be at most 8192 bytes of JSON (got 9011)",
            ["input", "properties"],
        ),
        (
            {"target": {"priceSlug": "pro_monthly"}},
            "price pro_monthly is not a usage price",
            ["input", "target", "priceSlug"],
        ),
    ],
)
async def test_invalid_input(gql, db, pro, fields, message, field) -> None:
    before = await snapshot(db)
    result = await record(gql, **secret_input(pro, **fields))
    assert result == {
        "__typename": "InvalidInput",
        "code": "INVALID_INPUT",
        "message": message,
        "field": field,
    }
    assert await snapshot(db) == before


@pytest.mark.parametrize(
    ("offset", "message"),
    [
        (timedelta(minutes=6), "usageDate is too far in the future"),
        (timedelta(days=-36), "usageDate is older than the backdating window"),
    ],
)
async def test_usage_date_window(gql, db, offset, message) -> None:
    await setup_pricing(gql)
    start = (datetime.now(UTC) - timedelta(days=60)).isoformat()
    sub_id = await customer_on_plan(gql, "user-1", "pro_monthly", start_date=start)
    before = await snapshot(db)
    date = (datetime.now(UTC) + offset).isoformat()
    result = await record(gql, subscriptionId=sub_id, amount=1, transactionId="t", usageDate=date)
    assert result == {
        "__typename": "InvalidInput",
        "code": "INVALID_INPUT",
        "message": message,
        "field": ["input", "usageDate"],
    }
    assert await snapshot(db) == before


async def test_usage_date_before_the_subscription_started(gql, db, pro) -> None:
    before = await snapshot(db)
    date = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    result = await record(gql, **secret_input(pro, usageDate=date))
    assert result["message"] == "usageDate is before the subscription started"
    assert result["code"] == "INVALID_INPUT"
    assert await snapshot(db) == before


async def test_backdated_event_lands_in_its_own_billing_period(gql, db) -> None:
    await setup_pricing(gql)
    start = datetime.now(UTC) - timedelta(days=45)
    sub_id = await customer_on_plan(gql, "user-1", "pro_monthly", start_date=start.isoformat())
    previous = (datetime.now(UTC) - timedelta(days=20)).isoformat()
    result = await record(
        gql, subscriptionId=sub_id, amount=7, transactionId="old", usageDate=previous
    )
    assert result["__typename"] == "UsageEventRecorded"
    # The event belongs to the previous period; the current period has no usage.
    assert result["balance"]["usedBalance"] == 0
    period = await db.fetchrow("SELECT period_start, period_end FROM usage_events")
    assert period is not None
    assert period["period_start"] < datetime.fromisoformat(result["balance"]["billingPeriodStart"])


async def test_unknown_subscription_and_target_are_not_found(gql, db, pro) -> None:
    before = await snapshot(db)
    missing_sub = await record(
        gql, **secret_input(pro, subscriptionId="00000000-0000-7000-8000-000000000000")
    )
    assert missing_sub["code"] == "NOT_FOUND"
    assert missing_sub["field"] == ["input", "subscriptionId"]
    bad_id = await record(gql, **secret_input(pro, subscriptionId="not-an-id"))
    assert bad_id["code"] == "NOT_FOUND"
    missing_meter = await record(gql, **secret_input(pro, target={"usageMeterSlug": "nope"}))
    assert missing_meter == {
        "__typename": "NotFound",
        "code": "NOT_FOUND",
        "message": "no usage meter nope in the customer's pricing model",
        "field": ["input", "target", "usageMeterSlug"],
    }
    assert await snapshot(db) == before


async def test_price_of_another_pricing_model_is_not_found(gql, db, pro) -> None:
    other = await setup_pricing(gql, (await _renamed_pricing()))
    foreign_price = next(
        p["id"]
        for m in other["usageMeters"]
        for p in m["prices"]
        if p["slug"] == "generations_overage"
    )
    before = await snapshot(db)
    result = await record(gql, **secret_input(pro, target={"priceId": foreign_price}))
    assert result["code"] == "NOT_FOUND"
    assert await snapshot(db) == before


async def _renamed_pricing() -> str:
    from tests.factories import PRICING

    return PRICING.replace("name: Test pricing", "name: Other pricing")


async def test_canceled_subscription_has_no_current_subscription(gql, db, pro) -> None:
    response = await gql(
        "mutation($s: ID!) { cancelSubscription(input: {subscriptionId: $s}) { __typename } }",
        {"s": pro["sub"]},
    )
    assert ok(response, "cancelSubscription") == {"__typename": "SubscriptionCanceled"}
    before = await snapshot(db)
    result = await record(gql, **secret_input(pro))
    assert result["code"] == "NO_CURRENT_SUBSCRIPTION"
    assert result["field"] == ["input", "subscriptionId"]
    token = await session_token(gql, "user-1")
    by_token = await record(gql, token=token)
    assert by_token == {
        "__typename": "NoCurrentSubscription",
        "code": "NO_CURRENT_SUBSCRIPTION",
        "message": "the customer has no current subscription",
        "field": ["input", "subscriptionId"],
    }
    assert await snapshot(db) == before


async def test_customer_token_cannot_charge_another_customers_subscription(gql, db, pro) -> None:
    await create_customer(gql, "user-2")
    token = await session_token(gql, "user-2")
    before = await snapshot(db)
    result = await record(gql, token=token, subscriptionId=pro["sub"])
    assert result["code"] == "NOT_FOUND"
    assert result["field"] == ["input", "subscriptionId"]
    assert await snapshot(db) == before


async def test_count_distinct_properties(gql, db, pro) -> None:
    target = {"usageMeterSlug": "unique_users"}
    empty = await record(gql, **secret_input(pro, target=target, transactionId="e"))
    assert empty["message"] == (
        "meter unique_users counts distinct properties: properties must not be empty"
    )
    assert await db.fetchval("SELECT count(*) FROM usage_events") == 0
    used = []
    for tx, props in [
        ("a", {"user": "u1", "team": "t"}),
        ("b", {"team": "t", "user": "u1"}),
        ("c", {"user": "u2"}),
    ]:
        result = await record(
            gql, **secret_input(pro, target=target, transactionId=tx, properties=props, amount=4)
        )
        used.append(result["balance"]["usedBalance"])
    # Keys are compared after sorting: a and b are the same set of properties.
    assert used == [1, 1, 2]
    assert (await balance(gql, "unique_users"))["availableBalance"] == 1


async def test_replay_and_conflict(gql, db, pro) -> None:
    first = await record(gql, **secret_input(pro, amount=3, properties={"model": "x"}))
    again = await record(gql, **secret_input(pro, amount=3, properties={"model": "x"}))
    assert again["replayed"] is True
    assert again["usageEvent"] == first["usageEvent"]
    assert again["balance"] == first["balance"]
    before = await snapshot(db)
    conflict = await record(gql, **secret_input(pro, amount=4, properties={"model": "x"}))
    assert conflict["__typename"] == "IdempotencyConflict"
    assert conflict["code"] == "IDEMPOTENCY_CONFLICT"
    assert conflict["field"] == ["input", "transactionId"]
    assert conflict["existingEvent"] == first["usageEvent"]
    other_price = await record(
        gql,
        **secret_input(
            pro, amount=3, properties={"model": "x"}, target={"priceSlug": "generations_discount"}
        ),
    )
    assert other_price["code"] == "IDEMPOTENCY_CONFLICT"
    assert await snapshot(db) == before
    # The key is per (customer, meter): the same transactionId on another meter is new.
    elsewhere = await record(gql, **secret_input(pro, target={"usageMeterSlug": "api_calls"}))
    assert elsewhere["replayed"] is False


async def test_replay_is_answered_even_after_the_subscription_ended(gql, pro) -> None:
    first = await record(gql, **secret_input(pro))
    await gql(
        "mutation($s: ID!) { cancelSubscription(input: {subscriptionId: $s}) { __typename } }",
        {"s": pro["sub"]},
    )
    again = await record(gql, **secret_input(pro))
    assert again["replayed"] is True
    assert again["usageEvent"]["id"] == first["usageEvent"]["id"]


async def test_require_balance_refuses_what_the_balance_does_not_cover(gql, db) -> None:
    await setup_pricing(gql)
    sub_id = await customer_on_plan(gql, "user-1", "free_monthly")  # 10 credits a month
    ok_result = await record(
        gql, subscriptionId=sub_id, amount=8, transactionId="a", requireBalance=True
    )
    assert ok_result["balance"]["availableBalance"] == 2
    before = await snapshot(db)
    refused = await record(
        gql, subscriptionId=sub_id, amount=3, transactionId="b", requireBalance=True
    )
    assert refused == {
        "__typename": "InsufficientBalance",
        "code": "INSUFFICIENT_BALANCE",
        "message": "meter generations has 2 available, 3 required",
        "field": ["input", "amount"],
        "meterSlug": "generations",
        "availableBalance": 2,
        "required": 3,
        "upgradeOptions": [{"slug": "pro"}],
    }
    assert await snapshot(db) == before
    # Without requireBalance the same usage is recorded as overage.
    over = await record(gql, subscriptionId=sub_id, amount=3, transactionId="b")
    assert over["balance"]["availableBalance"] == -1


async def test_batch_results_are_in_order_and_independent(gql, db, pro) -> None:
    items = [
        secret_input(pro, transactionId="b1", amount=2),
        secret_input(pro, transactionId="b2", amount=0),
        secret_input(pro, transactionId="b3", target={"usageMeterSlug": "nope"}),
        secret_input(pro, transactionId="b1", amount=2),
        secret_input(pro, transactionId="b1", amount=9),
        {"target": {"usageMeterSlug": "generations"}},
    ]
    results = ok(await gql(CREATE_USAGE_EVENTS, {"input": items}), "createUsageEvents")
    assert [r["__typename"] for r in results] == [
        "UsageEventRecorded",
        "InvalidInput",
        "NotFound",
        "UsageEventRecorded",
        "IdempotencyConflict",
        "InvalidInput",
    ]
    assert results[0]["replayed"] is False
    assert results[3]["replayed"] is True
    assert results[3]["usageEvent"]["id"] == results[0]["usageEvent"]["id"]
    assert results[1]["field"] == ["input", "1", "amount"]
    assert results[2]["field"] == ["input", "2", "target", "usageMeterSlug"]
    assert results[4]["existingEvent"]["id"] == results[0]["usageEvent"]["id"]
    assert results[5]["field"] == ["input", "5", "subscriptionId"]
    assert await db.fetchval("SELECT count(*) FROM usage_events") == 1
    assert (await balance(gql))["usedBalance"] == 2


async def test_batch_is_one_statement(gql, pro) -> None:
    items = [secret_input(pro, transactionId=f"t{i}") for i in range(100)]
    counter = start_counting()
    results = ok(await gql(CREATE_USAGE_EVENTS, {"input": items}), "createUsageEvents")
    assert {r["__typename"] for r in results} == {"UsageEventRecorded"}
    # The whole batch in one statement (the key was looked up by the fixture's requests).
    assert counter.count == 1
    assert (await balance(gql))["usedBalance"] == 100


async def test_batch_size_is_capped(gql, db, pro) -> None:
    items = [secret_input(pro, transactionId=f"t{i}") for i in range(1001)]
    results = ok(await gql(CREATE_USAGE_EVENTS, {"input": items}), "createUsageEvents")
    assert len(results) == 1001
    assert {(r["code"], r["message"]) for r in results} == {
        ("INVALID_INPUT", "a batch holds at most 1000 events (got 1001)")
    }
    assert await db.fetchval("SELECT count(*) FROM usage_events") == 0


async def test_hot_path_round_trips(gql, pro) -> None:
    await record(gql, **secret_input(pro, transactionId="warm"))
    counter = start_counting()
    result = await record(gql, **secret_input(pro, transactionId="counted"))
    assert result["__typename"] == "UsageEventRecorded"
    # One statement that records the event and returns the balance (the secret key is in the
    # process's cache); no BEGIN/COMMIT: the statement is its own transaction.
    assert counter.count == 1
    assert counter.statements[0].startswith("SELECT record_usage_event(")


async def test_subscription_on_another_customer_keeps_the_key_per_customer(gql, pro) -> None:
    await create_customer(gql, "user-2")
    other = (await subscribe(gql, "user-2", "pro_monthly"))["id"]
    mine = await record(gql, **secret_input(pro, transactionId="shared"))
    theirs = await record(gql, subscriptionId=other, amount=1, transactionId="shared")
    assert mine["replayed"] is False and theirs["replayed"] is False
    assert mine["usageEvent"]["id"] != theirs["usageEvent"]["id"]
