"""Voids: the stored state after a void equals a world where the event was never recorded."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.billing.reconcile import reconcile
from gateway.storage.db import Database
from tests.factories import customer_on_plan, record, session_token, setup_pricing
from tests.reservation_docs import VOID, charges, full_balance, void

GRANTS = """SELECT coalesce(f.slug, g.source), g.amount, g.consumed FROM credit_grants g
             LEFT JOIN features f ON f.id = g.feature_id
             JOIN subscriptions s ON s.id = g.subscription_id JOIN customers c ON c.id = s.customer_id
            WHERE c.external_id = $1 ORDER BY 1, 2"""


async def _state(gql: Any, db: Database, customer: str) -> dict[str, Any]:
    bal = await full_balance(gql, customer)
    assert bal is not None
    view = {
        k: bal[k] for k in ("availableBalance", "usedBalance", "balanceLimit", "reservedBalance")
    }
    return {
        "balance": view,
        "charges": await charges(gql, customer),
        "grants": [tuple(r) for r in await db.fetch(GRANTS, customer)],
    }


async def test_a_void_gives_the_world_without_the_event(gql, db: Database) -> None:
    await setup_pricing(gql)
    # pro: 1,000 credits this period (expiring at its end) + 100 once (never expiring).
    with_it = await customer_on_plan(gql, "with", "pro_monthly")
    without = await customer_on_plan(gql, "without", "pro_monthly")
    for amount, key in ((600, "a"), (700, "mistake"), (300, "c"), (400, "d")):
        await record(gql, subscriptionId=with_it, amount=amount, transactionId=key)
        if key != "mistake":
            await record(gql, subscriptionId=without, amount=amount, transactionId=key)
    event = await db.fetchval("SELECT id::text FROM usage_events WHERE transaction_id = 'mistake'")
    before = await _state(gql, db, "with")
    assert before["balance"]["usedBalance"] == 2000
    assert before["charges"][0]["overageEvents"] == 900

    voided = await void(gql, event, "duplicate import")
    assert voided["__typename"] == "UsageEventVoided", voided
    assert voided["usageEvent"]["voidReason"] == "duplicate import"
    assert voided["usageEvent"]["voidedAt"] is not None
    assert voided["balance"]["usedBalance"] == 1300
    after = await _state(gql, db, "with")
    assert after == await _state(gql, db, "without")
    assert after["charges"] == [
        {
            "price": {"slug": "generations_overage"},
            "overageEvents": 200,
            "units": 20,
            "amount": 100,
            "currency": "USD",
        }
    ]
    assert await reconcile(db) == []

    # Voiding again is a no-op answer.
    again = await void(gql, event, "another reason")
    assert again["__typename"] == "UsageEventVoided"
    assert again["usageEvent"]["voidedAt"] == voided["usageEvent"]["voidedAt"]
    assert again["usageEvent"]["voidReason"] == "duplicate import"
    assert await _state(gql, db, "with") == after

    # A retry of the voided event is a replay of it, never a new charge.
    retry = await record(gql, subscriptionId=with_it, amount=700, transactionId="mistake")
    assert (retry["__typename"], retry["replayed"]) == ("UsageEventRecorded", True)
    assert retry["usageEvent"]["id"] == event
    assert retry["balance"]["usedBalance"] == 1300
    changed = await record(gql, subscriptionId=with_it, amount=1, transactionId="mistake")
    assert changed["__typename"] == "IdempotencyConflict"
    assert await db.fetchval("SELECT count(*) FROM usage_events") == 7
    assert await _state(gql, db, "with") == after
    assert await reconcile(db) == []


async def test_a_voided_distinct_set_is_paid_by_its_repeat_or_freed(gql, db: Database) -> None:
    await setup_pricing(gql)
    sub = await customer_on_plan(gql, "user-1", "pro_monthly")

    async def seen(key: str, user: str) -> dict[str, Any]:
        result = await record(
            gql,
            target={"usageMeterSlug": "unique_users"},
            subscriptionId=sub,
            amount=1,
            transactionId=key,
            properties={"user": user},
        )
        assert result["__typename"] == "UsageEventRecorded", result
        return result

    async def used() -> int:
        bal = await full_balance(gql, "user-1", "unique_users")
        assert bal is not None
        return int(bal["usedBalance"])

    first_a = await seen("a1", "a")
    await seen("b1", "b")
    repeat_a = await seen("a2", "a")
    assert await used() == 2
    # The repeat pays for the set once its first event is voided.
    await void(gql, first_a["usageEvent"]["id"])
    assert await used() == 2
    assert await db.fetchval("SELECT consumed FROM usage_events WHERE transaction_id = 'a2'") == 1
    # Voiding the only live event of a set frees it: the next one pays again.
    await void(gql, repeat_a["usageEvent"]["id"])
    assert await used() == 1
    assert await db.fetchval("SELECT count(*) FROM usage_distinct_keys") == 1
    await seen("a3", "a")
    assert await used() == 2
    assert await reconcile(db) == []


async def test_an_event_of_a_closed_period_cannot_be_voided(gql, db: Database) -> None:
    await setup_pricing(gql)
    started = datetime.now(UTC) - timedelta(days=45)
    sub = await customer_on_plan(gql, "user-1", start_date=started.isoformat())
    period_start: datetime = await db.fetchval(
        "SELECT (billing_period(start_date, interval_unit, interval_count, now())).period_start"
        " FROM subscriptions WHERE id = $1::uuid",
        sub,
    )
    old = await record(
        gql,
        subscriptionId=sub,
        amount=5,
        transactionId="old",
        usageDate=(period_start - timedelta(days=2)).isoformat(),
    )
    assert old["__typename"] == "UsageEventRecorded", old
    totals = [tuple(r) for r in await db.fetch("SELECT * FROM usage_totals ORDER BY 1, 2, 3, 4")]
    grants = [tuple(r) for r in await db.fetch("SELECT id, consumed FROM credit_grants ORDER BY 1")]
    refused = await void(gql, old["usageEvent"]["id"])
    assert refused == {
        "__typename": "InvalidInput",
        "code": "INVALID_INPUT",
        "message": f"usage event {old['usageEvent']['id']} belongs to a closed billing period",
        "field": ["input", "usageEventId"],
    }
    assert await db.fetchval("SELECT voided_at FROM usage_events") is None
    assert [tuple(r) for r in await db.fetch("SELECT * FROM usage_totals ORDER BY 1, 2, 3, 4")] == (
        totals
    )
    assert [
        tuple(r) for r in await db.fetch("SELECT id, consumed FROM credit_grants ORDER BY 1")
    ] == grants
    missing = await void(gql, "0190a8d6-0000-7000-8000-000000000000")
    assert (missing["__typename"], missing["field"]) == ("NotFound", ["input", "usageEventId"])


async def test_a_customer_token_cannot_void(gql, db: Database) -> None:
    await setup_pricing(gql)
    await customer_on_plan(gql, "user-1", "free_monthly")
    token = await session_token(gql, "user-1")
    recorded = await record(gql, token=token)
    response = await gql(
        VOID, {"input": {"usageEventId": recorded["usageEvent"]["id"]}}, token=token
    )
    assert response.status == 403
    assert [e["extensions"]["code"] for e in response.errors or []] == ["FORBIDDEN"]
    assert response.data is None
    assert await db.fetchval("SELECT voided_at FROM usage_events") is None
    bal = await full_balance(gql)
    assert bal is not None and bal["usedBalance"] == 1


async def test_random_voids_equal_the_world_without_them(gql, db: Database) -> None:
    """Events at two prices, a manual grant that expires soonest in between, and voids of
    random events in random order: the state equals that of a customer who never had them."""
    await setup_pricing(gql)
    rng = random.Random(15)
    subs = {name: await customer_on_plan(gql, name, "pro_monthly") for name in ("with", "without")}
    events = [
        (f"e{i}", rng.randint(1, 250), rng.choice(["generations_overage", "generations_discount"]))
        for i in range(24)
    ]
    voided = set(rng.sample([key for key, _, _ in events], 6))
    soon = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    ids: dict[str, str] = {}
    for n, (key, amount, price) in enumerate(events):
        if n == 8:
            for sub in subs.values():
                granted = await gql(
                    """mutation($s: ID!, $e: DateTime) { grantUsageCredits(input: {
                         subscriptionId: $s, usageMeterSlug: "generations", amount: 300,
                         expiresAt: $e}) { __typename } }""",
                    {"s": sub, "e": soon},
                )
                assert granted.errors is None, granted.errors
        for name, sub in subs.items():
            if name == "without" and key in voided:
                continue
            result = await record(
                gql,
                target={"priceSlug": price},
                subscriptionId=sub,
                amount=amount,
                transactionId=key,
            )
            assert result["__typename"] == "UsageEventRecorded", result
            if name == "with":
                ids[key] = result["usageEvent"]["id"]
    for key in rng.sample(sorted(voided), len(voided)):
        answer = await void(gql, ids[key])
        assert answer["__typename"] == "UsageEventVoided", answer
    state = await _state(gql, db, "with")
    assert state == await _state(gql, db, "without")
    kept = sum(amount for key, amount, _ in events if key not in voided)
    assert state["balance"]["usedBalance"] == kept
    # Beyond the 1,400 credits: overage at both prices, which the voids moved.
    assert state["balance"]["availableBalance"] == 1400 - kept
    assert sorted(c["price"]["slug"] for c in state["charges"]) == [
        "generations_discount",
        "generations_overage",
    ]
    assert await reconcile(db) == []


async def test_a_void_with_too_many_later_events_is_refused(gql, db: Database, settings) -> None:
    from gateway.reservations.voids import void_usage_event

    await setup_pricing(gql)
    sub = await customer_on_plan(gql, "user-1", "pro_monthly")
    first = await record(gql, subscriptionId=sub, amount=5, transactionId="first")
    for key in ("second", "third"):
        await record(gql, subscriptionId=sub, amount=5, transactionId=key)
    before = [tuple(r) for r in await db.fetch("SELECT * FROM usage_events ORDER BY seq")]
    tight = settings.model_copy(update={"gateway_void_max_later_events": 1})
    refused = await void_usage_event(db, tight, first["usageEvent"]["id"], None)
    assert (refused.code.value, refused.field) == ("INVALID_INPUT", ["input", "usageEventId"])
    assert refused.message == (
        f"more than 1 events were recorded after usage event {first['usageEvent']['id']}"
        " on its meter: it can no longer be voided"
    )
    assert [tuple(r) for r in await db.fetch("SELECT * FROM usage_events ORDER BY seq")] == before
    roomy = settings.model_copy(update={"gateway_void_max_later_events": 2})
    done = await void_usage_event(db, roomy, first["usageEvent"]["id"], None)
    assert done.balance is not None and done.balance.used_balance == 10
    assert await reconcile(db) == []
