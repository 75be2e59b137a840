"""Batches: the steady path (_record_usage_steady, migration 0005) against item by item.

Every batch runs twice from the same state, each time in a transaction that is rolled back:
once as the gateway runs it, and once with ``_record_usage_steady()`` replaced, inside that
transaction, by a function that declines every group. The second run is the item-by-item path
of 0003. Both runs must give the same results and leave the same rows. Timestamps taken from
``now()`` differ between the two transactions, so they are compared apart: an event's
``usage_date`` and ``created_at`` must be its transaction's ``now()``.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from gateway.billing.reconcile import reconcile
from gateway.billing.usage import _BATCH_SQL, UsageInput, _intervals, _prepare
from gateway.billing.usage_answers import batch_answers, whole_answers
from gateway.callers.auth import Caller
from gateway.errors import UserError
from gateway.storage.db import Database
from tests.alert_factories import create_alert
from tests.conftest import GraphQLClient
from tests.factories import (
    CREATE_USAGE_EVENTS,
    customer_on_plan,
    ok,
    record,
    session_token,
    setup_pricing,
    subscribe,
)

DECLINE = """CREATE OR REPLACE FUNCTION _record_usage_steady(
  p_customers uuid[], p_groups jsonb, p_items jsonb, p_caller_customer_id uuid,
  OUT recorded_positions integer[], OUT recorded_results jsonb[])
LANGUAGE sql AS 'SELECT NULL::integer[], NULL::jsonb[]'"""

STATE = {
    "events": """SELECT id, customer_id, subscription_id, usage_meter_id, price_id,
                        billing_period_id, period_start, period_end, amount, consumed, covered,
                        seq, transaction_id, properties, properties_given, usage_date_given, take_amounts,
                        usage_date = now() AS dated_now, created_at = now() AS created_now
                   FROM usage_events ORDER BY id""",
    "totals": "SELECT * FROM usage_totals ORDER BY subscription_id, usage_meter_id, price_id",
    # Grant ids are left out: a grant issued during the batch gets a new id in each run.
    "grants": """SELECT subscription_id, usage_meter_id, feature_id, source, granted_at,
                        expires_at, amount, consumed, issued_seq
                   FROM credit_grants
                  ORDER BY subscription_id, usage_meter_id, feature_id, granted_at""",
    "locks": "SELECT * FROM meter_balances ORDER BY subscription_id, usage_meter_id",
    "distinct": "SELECT * FROM usage_distinct_keys ORDER BY 1, 2, 3, 4",
}
# Calls of the item-by-item function so far (the view also counts earlier transactions of the
# connection whose statistics are not flushed yet: only differences are meaningful).
CALLS = """SELECT coalesce(sum(calls), 0) FROM pg_stat_xact_user_functions
            WHERE funcname = 'record_usage_event'"""

STEADY_CALLS = """SELECT funcname, calls FROM pg_stat_xact_user_functions
                   WHERE funcname IN ('_record_usage_steady', 'record_usage_event')"""


def _normalise(value: Any, now: datetime) -> Any:
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key in ("usage_date", "created_at"):
                out[key] = datetime.fromisoformat(item) == now
            else:
                out[key] = _normalise(item, now)
        return out
    if isinstance(value, list):
        return [_normalise(v, now) for v in value]
    return value


async def _customer_of(conn: Any, prepared: list[Any]) -> uuid.UUID:
    """The batch's customer (all its items are one customer's), as gateway.billing.owners
    resolves it."""
    customer: uuid.UUID = await conn.fetchval(
        "SELECT customer_id FROM subscriptions WHERE id = $1",
        uuid.UUID(prepared[0]["subscription_id"]),
    )
    return customer


async def _batch(
    conn: Any, settings: Any, caller: Caller, prepared: list[Any]
) -> tuple[list[int], list[Any]]:
    """As the gateway calls it on one PostgreSQL (gateway.billing.usage): one call of
    record_usage_batch() for all the customers, items in customer id order, each naming its
    customer (an unknown subscription's item: a customer of no rows, answered NOT_FOUND).
    Returns the input index of each position, and the answers by position."""
    backdating, future = _intervals(settings)
    owners = [
        caller.customer_id or await _customer_of(conn, [p]) or uuid.UUID(int=0) for p in prepared
    ]
    customers = sorted(set(owners))
    order = [i for c in customers for i, o in enumerate(owners) if o == c]
    row = await conn.fetchrow(
        _BATCH_SQL,
        customers,
        [{**prepared[i], "customer_id": str(owners[i])} for i in order],
        caller.customer_id,
        backdating,
        future,
        None,
    )
    return order, batch_answers(row)


async def _run(
    db: Database, settings: Any, caller: Caller, prepared: list[Any], *, grouped: bool
) -> dict[str, Any]:
    async with db.pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        try:
            await conn.execute("SET LOCAL track_functions = 'pl'")
            if not grouped:
                await conn.execute(DECLINE)
            now = await conn.fetchval("SELECT now()")
            before = await conn.fetchval(CALLS)
            order, rows = await _batch(conn, settings, caller, prepared)
            item_by_item = await conn.fetchval(CALLS) - before
            # Answers given by difference from their group's last event, made whole as the
            # gateway makes them.
            by_difference = sum("same_group_as" in data for _, _, data in rows)
            whole = whole_answers(rows, [order], prepared)
            results = {index + 1: _normalise(data, now) for index, data in whole.items()}
            state = {name: [dict(r) for r in await conn.fetch(sql)] for name, sql in STATE.items()}
        finally:
            await tx.rollback()
    return {
        "results": [results[i + 1] for i in range(len(prepared))],
        "state": state,
        "item_by_item": item_by_item,
        "by_difference": by_difference,
    }


async def _compare(
    db: Database, settings: Any, caller: Caller, items: list[UsageInput]
) -> dict[str, Any]:
    # Prepared once: event ids and generated transactionIds are the same in both runs.
    prepared = [_prepare(caller, item, settings) for item in items]
    assert all(isinstance(p, dict) for p in prepared), prepared
    grouped = await _run(db, settings, caller, prepared, grouped=True)
    plain = await _run(db, settings, caller, prepared, grouped=False)
    assert grouped["results"] == plain["results"]
    assert grouped["state"] == plain["state"]
    assert plain["by_difference"] == 0
    return grouped


def _meter(sub: str, tx: str, amount: int = 1, **fields: Any) -> UsageInput:
    return UsageInput(
        target_kind=fields.pop("kind", "usageMeterSlug"),
        target=fields.pop("target", "generations"),
        amount=amount,
        subscription_id=sub,
        transaction_id=tx,
        **fields,
    )


@pytest.fixture
async def plans(gql: GraphQLClient, db: Database) -> dict[str, Any]:
    model = await setup_pricing(gql)
    pro = await customer_on_plan(gql, "user-1", "pro_monthly")
    other = await customer_on_plan(gql, "user-2", "pro_monthly")
    free = await customer_on_plan(gql, "user-3", "free_monthly")
    for sub, n in ((pro, 1), (other, 2), (free, 3)):  # the period's grants are issued
        for meter in ("generations", "api_calls"):
            await record(
                gql,
                target={"usageMeterSlug": meter},
                subscriptionId=sub,
                amount=n,
                transactionId=f"seed-{meter}",
            )
    prices = {p["slug"]: p["id"] for m in model["usageMeters"] for p in m["prices"]}
    return {"pro": pro, "other": other, "free": free, "prices": prices}


SECRET = Caller(kind="secret_key", key_id=uuid.uuid4())


async def test_steady_groups_are_recorded_at_once_and_equal_item_by_item(
    db: Database, settings: Any, plans: dict[str, Any], gql: GraphQLClient
) -> None:
    pro, other, free = plans["pro"], plans["other"], plans["free"]
    # A manual grant expiring within the hour: taken before the monthly grant.
    granted = await gql(
        """mutation($s: ID!, $e: DateTime) { grantUsageCredits(input: {subscriptionId: $s,
         usageMeterSlug: "generations", amount: 50, expiresAt: $e}) { __typename } }""",
        {"s": other, "e": (datetime.now(UTC) + timedelta(hours=1)).isoformat()},
    )
    assert granted.data == {"grantUsageCredits": {"__typename": "UsageCreditsGranted"}}
    items = [
        # crosses from the monthly grant into the one-time grant, then into overage
        _meter(pro, "a", 400),
        _meter(other, "b", 3),
        _meter(pro, "c", 650, properties={"model": "large", "n": 2.0}),
        _meter(pro, "d", 100),
        _meter(pro, "e", 7, kind="priceSlug", target="generations_overage"),
        _meter(pro, "f", 1, kind="priceId", target=plans["prices"]["generations_discount"]),
        _meter(other, "g", 5, kind="usageMeterSlug", target="api_calls"),
        _meter(other, "h", 2, kind="usageMeterSlug", target="api_calls"),
        _meter(free, "i", 4),  # no grants on the free plan: no balance limit
        _meter(free, "j", 6),
        _meter(other, "k", 1),
    ]
    outcome = await _compare(db, settings, SECRET, items)
    # every item recorded by the steady statement: one call for all the customers
    assert outcome["item_by_item"] == 0
    # four groups (pro and free on generations, other on generations and on api_calls), of
    # 5, 2, 2 and 2 events: all but each group's last answered by difference
    assert outcome["by_difference"] == 7
    statuses = [r["status"] for r in outcome["results"]]
    assert statuses == ["recorded"] * len(items)
    used = [r["balance"]["used_balance"] for r in outcome["results"]]
    assert used == [401, 5, 1051, 1151, 1158, 1159, 7, 9, 7, 13, 6]
    # 1,100 credits (1,000 monthly + 100 one-time), 1 used by the seed event.
    covered = [r["covered"] for r in outcome["state"]["events"] if r["transaction_id"] in "acdef"]
    assert sorted(covered) == [0, 0, 49, 400, 650]
    manual = [g for g in outcome["state"]["grants"] if g["source"] == "manual"]
    assert [(g["amount"], g["consumed"]) for g in manual] == [(50, 4)]


async def test_groups_that_are_not_steady_run_item_by_item_with_the_same_answers(
    db: Database, settings: Any, plans: dict[str, Any], gql: GraphQLClient
) -> None:
    pro, other = plans["pro"], plans["other"]
    token = await session_token(gql, "user-1")
    assert token
    second = str((await subscribe(gql, "user-1", "pro_monthly"))["id"])
    await record(gql, subscriptionId=second, amount=1, transactionId="seed-2")
    long_ago = datetime.fromisoformat("2000-01-01T00:00:00+00:00")
    # (batch, how many of its items run item by item; the steady statement serves a batch of
    # three items or more, whatever its customers)
    cases = [
        ([_meter(pro, "x", 2), _meter(pro, "x", 2)], 2),  # repeated in the group
        ([_meter(pro, "seed-generations", 1), _meter(pro, "y", 1)], 2),  # already recorded
        ([_meter(pro, "z1", 5), _meter(pro, "z2", 5000, require_balance=True)], 2),
        ([_meter(pro, "u1", 1, usage_date=long_ago), _meter(pro, "u2", 1)], 2),
        (
            [
                _meter(pro, "d1", 1, target="unique_users", properties={"u": 1}),
                _meter(pro, "d2", 1, target="unique_users", properties={"u": 1.0}),
            ],
            2,
        ),  # a COUNT_DISTINCT_PROPERTIES meter
        (
            [
                _meter(pro, "n1", 1, kind="priceSlug", target="nope"),
                _meter(pro, "n2", 1),
                _meter(other, "n3", 1),
            ],
            1,
        ),
        # two items: always item by item (the steady statement serves three or more)
        ([_meter(pro, "v1", 1), _meter(other, "v2", 1)], 2),
        (
            [
                _meter(pro, "p1", 1, target="api_calls"),
                _meter(other, "p2", 1, target="api_calls"),
                _meter(str(uuid.uuid4()), "p3", 1),
                _meter(str(uuid.uuid4()), "p4", 1),
            ],
            2,
        ),
        # one key on two subscriptions of a customer: both groups item by item, in order
        ([_meter(second, "k1", 1), _meter(pro, "k1", 1), _meter(other, "k2", 1)], 2),
    ]
    for items, item_by_item in cases:
        outcome = await _compare(db, settings, SECRET, items)
        assert outcome["item_by_item"] == item_by_item, items
    # A customer session: its own subscription by default, non-default prices refused.
    customer = await db.fetchval("SELECT id FROM customers WHERE external_id = 'user-1'")
    session = Caller(kind="customer", customer_id=customer)
    items = [
        UsageInput(target_kind="usageMeterSlug", target="generations", amount=3),
        UsageInput(target_kind="usageMeterSlug", target="generations", amount=4),
        UsageInput(target_kind="priceSlug", target="generations_discount", amount=1),
    ]
    outcome = await _compare(db, settings, session, items)
    assert [r["status"] for r in outcome["results"]] == ["recorded", "recorded", "error"]
    assert outcome["item_by_item"] == 3


async def test_a_key_claimed_meanwhile_undoes_the_group_and_replays_item_by_item(
    db: Database, settings: Any, plans: dict[str, Any], gql: GraphQLClient
) -> None:
    """Another subscription of the customer claims a transactionId of the group while the
    group waits: the group's writes are undone and its items run one by one."""
    pro = plans["pro"]
    second = str((await subscribe(gql, "user-1", "pro_monthly"))["id"])
    await record(gql, subscriptionId=second, amount=1, transactionId="seed-2")  # grants issued
    backdating, future = _intervals(settings)
    one = _prepare(SECRET, _meter(second, "t", 2), settings)
    batch = [_prepare(SECRET, _meter(pro, tx, 2), settings) for tx in ("s", "t", "u")]
    async with db.pool.acquire() as holder, db.pool.acquire() as batcher:
        claim = holder.transaction()
        await claim.start()
        customer = await _customer_of(holder, [one])
        claimed = await holder.fetch(
            "SELECT result FROM record_usage_events($1, $2::jsonb, NULL, $3, $4)",
            customer,
            [one],
            backdating,
            future,
        )
        assert claimed[0]["result"]["status"] == "recorded"
        work = batcher.transaction()
        await work.start()
        await batcher.execute("SET LOCAL track_functions = 'pl'")
        before = dict(await batcher.fetch(STEADY_CALLS))
        running = asyncio.ensure_future(
            batcher.fetch(
                "SELECT item_position, result"
                " FROM record_usage_events($1, $2::jsonb, NULL, $3, $4)",
                customer,
                batch,
                backdating,
                future,
            )
        )
        await asyncio.sleep(0.3)  # the batch now waits for the claim on "t"
        assert not running.done()
        await claim.commit()
        rows = await asyncio.wait_for(running, 10)
        after = dict(await batcher.fetch(STEADY_CALLS))
        await work.commit()
    # the steady statement ran, was undone, then both items ran one by one
    calls = {name: after[name] - before.get(name, 0) for name in after}
    assert calls == {"_record_usage_steady": 1, "record_usage_event": 3}
    results = {r["item_position"]: r["result"] for r in rows}
    assert results[1]["status"] == "recorded"
    assert (results[2]["status"], results[2]["code"]) == ("error", "IDEMPOTENCY_CONFLICT")
    assert results[2]["event"]["subscription_id"] == second
    assert results[3]["status"] == "recorded"
    events = await db.fetch(
        "SELECT subscription_id::text AS sub, transaction_id, seq FROM usage_events"
        " WHERE transaction_id IN ('s', 't', 'u') ORDER BY transaction_id"
    )
    assert [tuple(e) for e in events] == [(pro, "s", 2), (second, "t", 2), (pro, "u", 3)]
    totals = await db.fetchval(
        "SELECT sum(used) FROM usage_totals WHERE subscription_id = $1::uuid"
        " AND usage_meter_id = (SELECT usage_meter_id FROM usage_events WHERE transaction_id = 's')",
        pro,
    )
    assert totals == 1 + 2 + 2  # the seed, "s" and "u": nothing of the undone statement remains


async def test_grouped_batches_reconcile(
    db: Database, plans: dict[str, Any], gql: GraphQLClient
) -> None:
    """Batches through the API, grouped, in several rounds: the replay of every event by
    ``reconcile`` finds the balances the groups wrote."""
    for round_ in range(3):
        batch = [
            {
                "target": {"usageMeterSlug": meter},
                "subscriptionId": plans[sub],
                "amount": 97 * (i + 1),
                "transactionId": f"r{round_}-{i}",
            }
            for i, (sub, meter) in enumerate(
                [("pro", "generations"), ("other", "generations"), ("pro", "api_calls")] * 4
            )
        ]
        results = ok(await gql(CREATE_USAGE_EVENTS, {"input": batch}), "createUsageEvents")
        assert [r["__typename"] for r in results] == ["UsageEventRecorded"] * 12
    assert await reconcile(db) == []
    used = await db.fetchval(
        "SELECT sum(used) FROM usage_totals WHERE subscription_id = $1::uuid", plans["pro"]
    )
    assert used == 1 + 1 + 3 * sum(97 * (i + 1) for i in range(12) if i % 3 != 1)


async def test_a_batch_names_its_customers_and_each_item_one_of_them(
    db: Database, settings: Any, plans: dict[str, Any]
) -> None:
    """record_usage_batch() refuses an item of a customer the call does not name, or of no
    customer in a call of several, and nothing is written; a plain PostgreSQL is not
    distributed (one call for all the customers)."""
    assert db.distributed is False
    backdating, future = _intervals(settings)
    async with db.pool.acquire() as conn:
        pro = await _customer_of(conn, [{"subscription_id": plans["pro"]}])
        other = await _customer_of(conn, [{"subscription_id": plans["other"]}])
        before = await conn.fetchval("SELECT count(*) FROM usage_events")
        item = _prepare(SECRET, _meter(plans["pro"], "named", 1), settings)
        assert not isinstance(item, UserError)
        for customers, items, message in (
            ([other], [{**item, "customer_id": str(pro)}], "names no customer of the call"),
            ([pro, other], [item, item, item], "names no customer of the call"),
            ([], [item], "the customers must be given"),
        ):
            with pytest.raises(asyncpg.RaiseError) as raised:
                await conn.fetch(_BATCH_SQL, customers, items, None, backdating, future, None)
            assert message in str(raised.value)
        assert await conn.fetchval("SELECT count(*) FROM usage_events") == before


PRICES_READ = """SELECT coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0)
                   FROM pg_stat_xact_user_tables WHERE relname = 'prices'"""


async def test_a_batch_reads_its_items_prices_not_every_price(
    db: Database, settings: Any, plans: dict[str, Any]
) -> None:
    """Each item's price is found by an index probe for its target's form. The statement
    once matched prices by one `WHERE CASE ...` over the three forms, which no index serves:
    every item read every price of every pricing model."""
    pro, other = plans["pro"], plans["other"]
    items = [
        _meter(pro, "a", 1),
        _meter(pro, "b", 1, kind="priceSlug", target="generations_overage"),
        _meter(pro, "c", 1, kind="priceId", target=plans["prices"]["generations_discount"]),
        _meter(other, "d", 1),
        _meter(other, "e", 1, kind="usageMeterSlug", target="api_calls"),
        _meter(other, "f", 1),
    ]
    prepared = [_prepare(SECRET, item, settings) for item in items]
    async with db.pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        try:
            meter = await conn.fetchval(
                "SELECT usage_meter_id FROM prices WHERE type = 'usage' LIMIT 1"
            )
            model = await conn.fetchval("SELECT pricing_model_id FROM prices LIMIT 1")
            await conn.execute(
                """INSERT INTO prices (pricing_model_id, slug, type, unit_price, currency,
                                       usage_meter_id, usage_events_per_unit)
                   SELECT $1, 'filler-' || g, 'usage', 1, 'USD', $2, 1
                     FROM generate_series(1, 5000) g""",
                model,
                meter,
            )
            await conn.execute("ANALYZE prices")
            before = await conn.fetchval(PRICES_READ)
            _, rows = await _batch(conn, settings, SECRET, prepared)
            read = await conn.fetchval(PRICES_READ) - before
            events = await conn.fetchval(
                "SELECT count(*) FROM usage_events WHERE transaction_id = ANY($1::text[])",
                list("abcdef"),
            )
        finally:
            await tx.rollback()
    assert [data["status"] for _, _, data in rows] == ["recorded"] * len(items)
    assert events == len(items)
    # A few rows per item (its price found, the foreign-key checks of its event and totals
    # rows; 15 here), not the 5,000 others: the CASE form read them all (5,017).
    assert read <= 3 * len(items)
    assert await db.fetchval("SELECT count(*) FROM prices WHERE slug LIKE 'filler-%'") == 0


async def test_a_batch_leaves_the_callers_plan_cache_mode_as_it_was(
    db: Database, settings: Any, plans: dict[str, Any]
) -> None:
    """record_usage_batch() runs its grouping statement with the generic plan (migration
    0024) and puts the caller's mode back before anything else runs: the item-by-item path
    and the rest of the caller's transaction plan as they would have."""
    pro, other = plans["pro"], plans["other"]
    seen: dict[str, tuple[str, list[str], int]] = {}
    for mode in ("auto", "force_custom_plan"):
        items = [
            _meter(pro, f"{mode}-a", 1),
            _meter(pro, f"{mode}-a", 1),  # a key used twice: its group goes item by item
            _meter(other, f"{mode}-b", 1),
        ]
        prepared = [_prepare(SECRET, item, settings) for item in items]
        async with db.pool.acquire() as conn:
            tx = conn.transaction()
            await tx.start()
            try:
                await conn.execute(f"SET LOCAL plan_cache_mode = {mode}")
                _, rows = await _batch(conn, settings, SECRET, prepared)
                after = await conn.fetchval("SELECT current_setting('plan_cache_mode')")
                events = await conn.fetchval(
                    "SELECT count(*) FROM usage_events WHERE transaction_id LIKE $1",
                    f"{mode}-%",
                )
            finally:
                await tx.rollback()
        statuses = [data["status"] for _, _, data in rows]
        seen[mode] = (after, sorted(statuses), events)
    assert seen == {
        "auto": ("auto", ["recorded", "recorded", "replayed"], 2),
        "force_custom_plan": ("force_custom_plan", ["recorded", "recorded", "replayed"], 2),
    }


async def test_events_of_a_group_are_answered_by_difference_unless_an_alert_exists(
    db: Database, settings: Any, plans: dict[str, Any], gql: GraphQLClient
) -> None:
    """All but a group's last event are answered by what differs from it, and made whole
    equal the answers item by item; while an alert exists (the alerts hook reads every
    event's balance) every event is answered in full."""
    pro = plans["pro"]
    items = [_meter(pro, f"d{i}", i + 1) for i in range(3)]
    without = await _compare(db, settings, SECRET, items)
    assert without["by_difference"] == 2
    assert [r["balance"]["used_balance"] for r in without["results"]] == [2, 4, 7]
    await create_alert(gql, usageMeterSlug="generations", threshold={"usedAbove": 10**9})
    with_alert = await _compare(db, settings, SECRET, items)
    assert with_alert["by_difference"] == 0
    assert with_alert["item_by_item"] == 0
    assert [r["balance"]["used_balance"] for r in with_alert["results"]] == [2, 4, 7]
    assert (
        await db.fetchval("SELECT count(*) FROM usage_events WHERE transaction_id LIKE 'd_'") == 0
    )
