"""Billing periods, credits and balances: the worked examples, billing and charges."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gateway import cli
from gateway.billing.reconcile import reconcile
from gateway.storage.db import Database
from tests.factories import (
    balance,
    create_customer,
    customer_on_plan,
    ok,
    record,
    setup_pricing,
    subscribe,
)


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


@pytest.mark.parametrize(
    ("anchor", "unit", "count", "at", "start", "end"),
    [
        ("2026-01-31", "month", 1, "2026-02-15", "2026-01-31", "2026-02-28"),
        ("2026-01-31", "month", 1, "2026-03-05", "2026-02-28", "2026-03-31"),
        ("2026-01-31", "month", 1, "2026-03-31", "2026-03-31", "2026-04-30"),
        ("2028-01-31", "month", 1, "2028-02-29", "2028-02-29", "2028-03-31"),
        ("2026-01-15", "month", 3, "2026-07-20", "2026-07-15", "2026-10-15"),
        ("2024-02-29", "year", 1, "2025-03-01", "2025-02-28", "2026-02-28"),
        ("2026-01-01", "week", 2, "2026-01-20", "2026-01-15", "2026-01-29"),
        ("2026-01-01", "day", 1, "2026-01-01", "2026-01-01", "2026-01-02"),
    ],
)
async def test_billing_periods_clamp_to_month_end(
    db: Database, anchor: str, unit: str, count: int, at: str, start: str, end: str
) -> None:
    row = await db.fetchrow(
        "SELECT period_start, period_end FROM billing_period($1, $2, $3, $4)",
        ts(anchor + "T00:00:00+00:00"),
        unit,
        count,
        ts(at + "T12:00:00+00:00"),
    )
    assert row is not None
    assert (row["period_start"], row["period_end"]) == (
        ts(start + "T00:00:00+00:00"),
        ts(end + "T00:00:00+00:00"),
    )


async def _balance_at(db: Database, sub_id: str, meter: str, at: datetime) -> dict[str, Any]:
    row = await db.fetchrow(
        "SELECT b.available_balance, b.used_balance, b.balance_limit"
        "  FROM usage_meters m, subscriptions s,"
        "       usage_balance(s.customer_id, s.id, m.id, $3) b"
        " WHERE m.slug = $2 AND s.id = $1::uuid",
        sub_id,
        meter,
        at,
    )
    assert row is not None
    return dict(row)


async def test_pro_plan_period_one_then_period_two(gql, db: Database) -> None:
    """1,000 monthly + 100 one-time credits; 1,050 used in period 1."""
    await setup_pricing(gql)
    sub_id = await customer_on_plan(gql, "user-1", "pro_monthly")
    first = await record(gql, subscriptionId=sub_id, amount=1050, transactionId="p1")
    bal = first["balance"]
    assert (bal["availableBalance"], bal["usedBalance"], bal["balanceLimit"]) == (50, 1050, 1100)
    assert bal["percentUsed"] == pytest.approx(100 * 1050 / 1100)
    grants = {
        r["source"]: (r["amount"], r["consumed"])
        for r in await db.fetch("SELECT source, amount, consumed FROM credit_grants")
    }
    # Soonest-expiring first: the monthly credits, then 50 of the one-time credits.
    assert grants == {"every_billing_period": (1000, 1000), "once": (100, 50)}
    # Period 2: recurring credits renewed; what is left of the one-time credits carries over.
    period_end = ts(bal["billingPeriodEnd"])
    assert await _balance_at(db, sub_id, "generations", period_end + timedelta(days=1)) == {
        "available_balance": 1050,
        "used_balance": 0,
        "balance_limit": 1050,
    }
    assert await reconcile(db) == []


async def test_leftover_recurring_credits_expire_with_their_period(gql, db: Database) -> None:
    await setup_pricing(gql)
    start = datetime.now(UTC) - timedelta(days=45)
    sub_id = await customer_on_plan(gql, "user-1", "pro_monthly", start.isoformat())
    in_period_one = (datetime.now(UTC) - timedelta(days=30)).isoformat()
    await record(
        gql, subscriptionId=sub_id, amount=300, transactionId="old", usageDate=in_period_one
    )
    # Period 1 left 700 recurring credits unused: they expired. Period 2 has its own 1,000,
    # and the one-time credits are untouched.
    bal = await balance(gql)
    assert bal is not None
    assert (bal["availableBalance"], bal["usedBalance"], bal["balanceLimit"]) == (1100, 0, 1100)
    assert bal["percentUsed"] == 0.0
    assert await reconcile(db) == []


async def test_subscription_started_45_days_ago_is_in_its_second_period(gql) -> None:
    await setup_pricing(gql)
    await create_customer(gql, "user-1")
    start = (datetime.now(UTC) - timedelta(days=45)).replace(microsecond=0)
    sub = await subscribe(gql, "user-1", "pro_monthly", start.isoformat())
    row_start = ts(sub["currentBillingPeriodStart"])
    row_end = ts(sub["currentBillingPeriodEnd"])
    assert row_start <= datetime.now(UTC) < row_end
    assert row_start.day == start.day or row_start.day < start.day  # clamped at month end
    assert row_start > start + timedelta(days=27)
    assert row_end > row_start + timedelta(days=27)


async def test_pay_as_you_go_meter_balance_and_charges(gql, db: Database) -> None:
    await setup_pricing(gql)
    sub_id = await customer_on_plan(gql, "user-1", "pro_monthly")
    assert await balance(gql, "api_calls") is None
    result = await record(
        gql,
        subscriptionId=sub_id,
        amount=250,
        transactionId="calls",
        target={"usageMeterSlug": "api_calls"},
    )
    bal = result["balance"]
    assert (
        bal["availableBalance"],
        bal["usedBalance"],
        bal["balanceLimit"],
        bal["percentUsed"],
    ) == (-250, 250, None, None)
    billing = ok(
        await gql(
            """query { billing(customerExternalId: "user-1") {
             currentCharges { price { slug } overageEvents units amount currency }
             currentChargeTotals { amount currency } } }"""
        ),
        "billing",
    )
    # 2 cents per 100 calls, rounded up per price per period: 3 units.
    assert billing == {
        "currentCharges": [
            {
                "price": {"slug": "api_calls_standard"},
                "overageEvents": 250,
                "units": 3,
                "amount": 6,
                "currency": "USD",
            }
        ],
        "currentChargeTotals": [{"amount": 6, "currency": "USD"}],
    }


async def test_overage_beyond_credits_is_charged_at_the_events_price(gql, db: Database) -> None:
    await setup_pricing(gql)
    sub_id = await customer_on_plan(gql, "user-1", "free_monthly")  # 10 credits
    await record(gql, subscriptionId=sub_id, amount=25, transactionId="a")
    await record(
        gql,
        subscriptionId=sub_id,
        amount=4,
        transactionId="b",
        target={"priceSlug": "generations_discount"},
    )
    bal = await balance(gql)
    assert bal is not None
    assert (bal["availableBalance"], bal["usedBalance"], bal["balanceLimit"]) == (-19, 29, 10)
    charges = ok(
        await gql(
            """query { billing(customerExternalId: "user-1") {
             currentCharges { price { slug } overageEvents units amount }
             currentChargeTotals { amount currency } } }"""
        ),
        "billing",
    )
    # 15 uncovered at 5 per 10 events -> 2 units; 4 uncovered at 1 per 10 -> 1 unit.
    assert charges == {
        "currentCharges": [
            {
                "price": {"slug": "generations_discount"},
                "overageEvents": 4,
                "units": 1,
                "amount": 1,
            },
            {
                "price": {"slug": "generations_overage"},
                "overageEvents": 15,
                "units": 2,
                "amount": 10,
            },
        ],
        "currentChargeTotals": [{"amount": 11, "currency": "USD"}],
    }


async def test_manual_grant_expiring_mid_period(gql, db: Database) -> None:
    await setup_pricing(gql)
    sub_id = await customer_on_plan(gql, "user-1", "free_monthly")  # 10 credits a month
    expires = datetime.now(UTC) + timedelta(hours=1)
    granted = ok(
        await gql(
            """mutation($s: ID!, $e: DateTime) { grantUsageCredits(input: {subscriptionId: $s,
             usageMeterSlug: "generations", amount: 50, expiresAt: $e}) {
             __typename ... on UsageCreditsGranted { balance { availableBalance balanceLimit } } } }""",
            {"s": sub_id, "e": expires.isoformat()},
        ),
        "grantUsageCredits",
    )
    assert granted == {
        "__typename": "UsageCreditsGranted",
        "balance": {"availableBalance": 60, "balanceLimit": 60},
    }
    result = await record(gql, subscriptionId=sub_id, amount=30, transactionId="a")
    assert result["balance"]["availableBalance"] == 30
    # The grant expiring first was consumed first: 30 of the manual 50.
    consumed = {
        r["source"]: r["consumed"]
        for r in await db.fetch("SELECT source, consumed FROM credit_grants")
    }
    assert consumed == {"manual": 30, "every_billing_period": 0}
    # Two hours later the manual grant has expired with 20 unused: 10 monthly credits remain.
    later = datetime.now(UTC) + timedelta(hours=2)
    assert await _balance_at(db, sub_id, "generations", later) == {
        "available_balance": 10,
        "used_balance": 30,
        "balance_limit": 40,
    }
    assert await reconcile(db) == []


@pytest.mark.parametrize(
    ("fields", "code", "message"),
    [
        ({"amount": 0}, "INVALID_INPUT", "amount must be a positive integer"),
        (
            {"expiresAt": "2020-01-01T00:00:00+00:00"},
            "INVALID_INPUT",
            "expiresAt must lie in the future",
        ),
        (
            {"usageMeterSlug": "nope"},
            "NOT_FOUND",
            "no usage meter 'nope' in the customer's pricing model",
        ),
        (
            {"subscriptionId": "00000000-0000-7000-8000-000000000000"},
            "NOT_FOUND",
            "no subscription 00000000-0000-7000-8000-000000000000",
        ),
    ],
)
async def test_grant_usage_credits_errors(gql, db: Database, fields, code, message) -> None:
    await setup_pricing(gql)
    sub_id = await customer_on_plan(gql, "user-1", "free_monthly")
    grant = {"subscriptionId": sub_id, "usageMeterSlug": "generations", "amount": 5, **fields}
    result = ok(
        await gql(
            """mutation($i: GrantUsageCreditsInput!) { grantUsageCredits(input: $i) {
             __typename ... on UserError { code message } } }""",
            {"i": grant},
        ),
        "grantUsageCredits",
    )
    assert (result["code"], result["message"]) == (code, message)
    assert await db.fetchval("SELECT count(*) FROM credit_grants WHERE source = 'manual'") == 0


async def test_billing_shows_the_whole_picture(gql) -> None:
    await setup_pricing(gql)
    await create_customer(gql, "user-1")
    free = await subscribe(gql, "user-1", "free_monthly")
    pro = await subscribe(gql, "user-1", "pro_monthly")
    await gql(
        "mutation($s: ID!) { cancelSubscription(input: {subscriptionId: $s}) { __typename } }",
        {"s": free["id"]},
    )
    data = ok(
        await gql(
            """query { billing(customerExternalId: "user-1") {
             customer { externalId }
             subscriptions { id status current price { slug } }
             currentSubscriptions { id }
             currentSubscription { id }
             catalog { name products { slug defaultPrice { slug type unitPrice currency }
                                       features { slug type amount renewalFrequency
                                                  usageMeter { slug } } }
                       usageMeters { slug aggregationType defaultPrice { slug }
                                     prices { slug isDefault } } }
             usageBalances { usageMeter { slug } availableBalance balanceLimit }
             support: featureAccess(featureSlug: "priority_support")
             unknown: featureAccess(featureSlug: "nope") } }"""
        ),
        "billing",
    )
    assert data["customer"] == {"externalId": "user-1"}
    assert data["subscriptions"] == [
        {"id": pro["id"], "status": "ACTIVE", "current": True, "price": {"slug": "pro_monthly"}},
        {
            "id": free["id"],
            "status": "CANCELED",
            "current": False,
            "price": {"slug": "free_monthly"},
        },
    ]
    assert data["currentSubscriptions"] == [{"id": pro["id"]}]
    assert data["currentSubscription"] == {"id": pro["id"]}
    catalog = data["catalog"]
    assert catalog["name"] == "Test pricing"
    assert [p["slug"] for p in catalog["products"]] == ["free", "pro"]
    assert catalog["products"][1]["defaultPrice"] == {
        "slug": "pro_monthly",
        "type": "SUBSCRIPTION",
        "unitPrice": 2000,
        "currency": "USD",
    }
    assert [f["slug"] for f in catalog["products"][1]["features"]] == [
        "monthly_generations",
        "welcome_generations",
        "unique_user_allowance",
        "priority_support",
    ]
    assert catalog["usageMeters"] == [
        {
            "slug": "generations",
            "aggregationType": "SUM",
            "defaultPrice": {"slug": "generations_overage"},
            "prices": [
                {"slug": "generations_no_charge", "isDefault": False},
                {"slug": "generations_overage", "isDefault": True},
                {"slug": "generations_discount", "isDefault": False},
            ],
        },
        {
            "slug": "api_calls",
            "aggregationType": "SUM",
            "defaultPrice": {"slug": "api_calls_standard"},
            "prices": [
                {"slug": "api_calls_no_charge", "isDefault": False},
                {"slug": "api_calls_standard", "isDefault": True},
            ],
        },
        {
            "slug": "unique_users",
            "aggregationType": "COUNT_DISTINCT_PROPERTIES",
            "defaultPrice": {"slug": "unique_users_no_charge"},
            "prices": [{"slug": "unique_users_no_charge", "isDefault": True}],
        },
    ]
    assert data["usageBalances"] == [
        {"usageMeter": {"slug": "generations"}, "availableBalance": 1100, "balanceLimit": 1100},
        {"usageMeter": {"slug": "unique_users"}, "availableBalance": 3, "balanceLimit": 3},
    ]
    assert (data["support"], data["unknown"]) == (True, False)


async def test_unknown_customer_is_null(gql) -> None:
    await setup_pricing(gql)
    assert (
        ok(await gql('{ billing(customerExternalId: "nobody") { customer { id } } }'), "billing")
        is None
    )
    assert await balance(gql, customer="nobody") is None


async def test_customers_are_paginated(gql) -> None:
    await setup_pricing(gql)
    for i in range(5):
        await create_customer(gql, f"user-{i}")
    query = """query($first: Int, $after: String) { customers(first: $first, after: $after) {
                 edges { cursor node { externalId } } pageInfo { hasNextPage endCursor } } }"""
    page1 = ok(await gql(query, {"first": 3}), "customers")
    assert [e["node"]["externalId"] for e in page1["edges"]] == ["user-0", "user-1", "user-2"]
    assert page1["pageInfo"]["hasNextPage"] is True
    page2 = ok(await gql(query, {"first": 3, "after": page1["pageInfo"]["endCursor"]}), "customers")
    assert [e["node"]["externalId"] for e in page2["edges"]] == ["user-3", "user-4"]
    assert page2["pageInfo"] == {"hasNextPage": False, "endCursor": page2["edges"][-1]["cursor"]}
    too_many = await gql(query, {"first": 101})
    assert too_many.data is None
    assert too_many.errors is not None
    assert [(e["message"], e["extensions"]["code"]) for e in too_many.errors] == [
        ("first must be between 0 and 100", "BAD_USER_INPUT")
    ]


async def test_reconcile_reports_a_corrupted_balance(
    gql, db: Database, settings, capsys, monkeypatch
) -> None:
    await setup_pricing(gql)
    sub_id = await customer_on_plan(gql, "user-1", "pro_monthly")
    await record(gql, subscriptionId=sub_id, amount=12, transactionId="a")
    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    cli.get_settings.cache_clear()
    assert await asyncio.to_thread(cli.main, ["reconcile"]) == 0
    assert "every balance equals a recomputation" in capsys.readouterr().out
    await db.execute("UPDATE usage_totals SET used = used + 1, covered = covered + 1")
    drifts = await reconcile(db)
    assert len(drifts) == 1
    assert drifts[0].expected == (12, 12, 0)
    assert drifts[0].actual == (13, 13, 0)
    assert await asyncio.to_thread(cli.main, ["reconcile"]) == 1
    out = capsys.readouterr()
    assert "drift: subscription" in out.out
    assert "1 balance(s) drifted" in out.err
    cli.get_settings.cache_clear()
