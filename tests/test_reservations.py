"""Reservations: holds decided atomically, counted by every reader, settled exactly once."""

from __future__ import annotations

import asyncio

from gateway.billing.reconcile import reconcile
from gateway.reservations.sweep import sweep_reservations
from gateway.storage.db import Database
from tests.factories import (
    CREATE_USAGE_EVENTS,
    customer_on_plan,
    ok,
    record,
    session_token,
    setup_pricing,
)
from tests.reservation_docs import finalize, full_balance, release, reserve


async def _counts(db: Database) -> tuple[int, int]:
    events = await db.fetchval("SELECT count(*) FROM usage_events")
    holds = await db.fetchval("SELECT count(*) FROM usage_reservations")
    return events, holds


async def test_a_hold_is_excluded_from_every_reader_and_finalized_once(gql, db: Database) -> None:
    await setup_pricing(gql)
    sub = await customer_on_plan(gql, "user-1", "free_monthly")  # 10 credits a month
    held = await reserve(gql, subscriptionId=sub, amount=4, transactionId="llm-1")
    assert held["__typename"] == "UsageReserved", held
    assert held["replayed"] is False
    r = held["reservation"]
    assert (r["transactionId"], r["amount"], r["status"], r["usageEvent"]) == (
        "llm-1",
        4,
        "HELD",
        None,
    )
    assert (held["balance"]["availableBalance"], held["balance"]["reservedBalance"]) == (6, 4)
    bal = await full_balance(gql)
    assert bal is not None
    assert (bal["availableBalance"], bal["usedBalance"], bal["reservedBalance"]) == (6, 0, 4)
    assert bal["balanceLimit"] == 10

    # requireBalance sees the hold: 7 > 6 is refused, nothing written.
    refused = await record(
        gql, subscriptionId=sub, amount=7, transactionId="direct", requireBalance=True
    )
    assert (refused["__typename"], refused["availableBalance"], refused["required"]) == (
        "InsufficientBalance",
        6,
        7,
    )
    # Another hold sees it too.
    other = await reserve(gql, subscriptionId=sub, amount=7, transactionId="llm-2")
    assert (other["__typename"], other["availableBalance"]) == ("InsufficientBalance", 6)
    assert await _counts(db) == (0, 1)
    # An event recorded without requireBalance answers the balance net of the hold.
    plain = await record(gql, subscriptionId=sub, amount=1, transactionId="plain")
    assert (plain["balance"]["availableBalance"], plain["balance"]["usedBalance"]) == (5, 1)

    done = await finalize(gql, r["id"], 6)
    assert done["__typename"] == "UsageEventRecorded", done
    assert done["replayed"] is False
    assert (done["usageEvent"]["amount"], done["usageEvent"]["transactionId"]) == (6, "llm-1")
    assert (done["balance"]["availableBalance"], done["balance"]["reservedBalance"]) == (3, 0)
    assert done["balance"]["usedBalance"] == 7

    again = await finalize(gql, r["id"], 6)
    assert again["__typename"] == "UsageEventRecorded"
    assert (again["replayed"], again["usageEvent"]["id"]) == (True, done["usageEvent"]["id"])
    conflict = await finalize(gql, r["id"], 5)
    assert conflict["__typename"] == "IdempotencyConflict"
    assert conflict["existingEvent"]["amount"] == 6
    late = await release(gql, r["id"])
    assert (late["__typename"], late["field"]) == ("InvalidInput", ["input", "reservationId"])
    assert await _counts(db) == (2, 1)
    status = await db.fetchval("SELECT status FROM usage_reservations")
    assert status == "finalized"
    bal = await full_balance(gql)
    assert bal is not None
    assert (bal["availableBalance"], bal["usedBalance"], bal["reservedBalance"]) == (3, 7, 0)
    assert await reconcile(db) == []


async def test_release_frees_the_hold_and_records_nothing(gql, db: Database) -> None:
    await setup_pricing(gql)
    sub = await customer_on_plan(gql, "user-1", "free_monthly")
    held = await reserve(gql, subscriptionId=sub, amount=10, transactionId="job")
    rid = held["reservation"]["id"]
    freed = await release(gql, rid)
    assert freed["__typename"] == "UsageReservationReleased", freed
    assert freed["reservation"]["status"] == "RELEASED"
    assert (freed["balance"]["availableBalance"], freed["balance"]["reservedBalance"]) == (10, 0)
    twice = await release(gql, rid)
    assert (twice["__typename"], twice["reservation"]["status"]) == (
        "UsageReservationReleased",
        "RELEASED",
    )
    after = await finalize(gql, rid, 3)
    assert (after["__typename"], after["field"]) == ("InvalidInput", ["input", "reservationId"])
    assert await _counts(db) == (0, 1)
    # A retry of the reservation is a replay of the released hold, holding nothing again.
    retry = await reserve(gql, subscriptionId=sub, amount=10, transactionId="job")
    assert (retry["__typename"], retry["replayed"], retry["reservation"]["status"]) == (
        "UsageReserved",
        True,
        "RELEASED",
    )
    assert retry["balance"]["reservedBalance"] == 0


async def test_reserve_is_idempotent_and_refuses_a_key_spent_otherwise(gql, db: Database) -> None:
    await setup_pricing(gql)
    sub = await customer_on_plan(gql, "user-1", "free_monthly")
    first = await reserve(gql, subscriptionId=sub, amount=2, transactionId="k")
    retry = await reserve(gql, subscriptionId=sub, amount=2, transactionId="k")
    assert (retry["replayed"], retry["reservation"]["id"]) == (True, first["reservation"]["id"])
    assert retry["balance"]["reservedBalance"] == 2
    other = await reserve(gql, subscriptionId=sub, amount=3, transactionId="k")
    assert (other["__typename"], other["field"]) == ("InvalidInput", ["input", "transactionId"])
    await record(gql, subscriptionId=sub, amount=1, transactionId="spent")
    spent = await reserve(gql, subscriptionId=sub, amount=1, transactionId="spent")
    assert spent["__typename"] == "IdempotencyConflict"
    assert spent["existingEvent"]["transactionId"] == "spent"
    await finalize(gql, first["reservation"]["id"], 2)
    settled = await reserve(gql, subscriptionId=sub, amount=3, transactionId="k")
    assert settled["__typename"] == "IdempotencyConflict"
    assert await _counts(db) == (2, 1)
    assert await db.fetchval("SELECT sum(amount) FROM usage_reservations") == 2
    missing = await reserve(gql, subscriptionId=sub, amount=1)
    assert (missing["__typename"], missing["field"]) == ("InvalidInput", ["input", "transactionId"])
    too_long = await reserve(
        gql, subscriptionId=sub, amount=1, transactionId="x", expiresInSeconds=86_401
    )
    assert (too_long["__typename"], too_long["field"]) == (
        "InvalidInput",
        ["input", "expiresInSeconds"],
    )
    assert await _counts(db) == (2, 1)


async def test_an_expired_hold_is_freed_on_the_next_read_and_still_finalizes(
    gql, db: Database
) -> None:
    await setup_pricing(gql)
    sub = await customer_on_plan(gql, "user-1", "free_monthly")
    held = await reserve(
        gql, subscriptionId=sub, amount=8, transactionId="slow", expiresInSeconds=1
    )
    assert held["balance"]["availableBalance"] == 2
    await asyncio.sleep(1.2)
    bal = await full_balance(gql)  # no sweep has run
    assert bal is not None
    assert (bal["availableBalance"], bal["reservedBalance"]) == (10, 0)
    assert await db.fetchval("SELECT status FROM usage_reservations") == "held"
    other = await reserve(gql, subscriptionId=sub, amount=10, transactionId="next")
    assert other["__typename"] == "UsageReserved"
    released = await release(gql, other["reservation"]["id"])
    assert released["balance"]["availableBalance"] == 10
    replay = await reserve(gql, subscriptionId=sub, amount=8, transactionId="slow")
    assert replay["reservation"]["status"] == "EXPIRED"
    # The work was done: finalizing the expired hold still records it.
    done = await finalize(gql, held["reservation"]["id"], 9)
    assert done["__typename"] == "UsageEventRecorded", done
    assert (done["balance"]["availableBalance"], done["balance"]["usedBalance"]) == (1, 9)
    assert await db.fetchval(
        "SELECT status FROM usage_reservations WHERE transaction_id = 'slow'"
    ) == ("finalized")
    assert await reconcile(db) == []


async def test_the_sweep_only_tidies_expired_holds(gql, db: Database) -> None:
    await setup_pricing(gql)
    sub = await customer_on_plan(gql, "user-1", "free_monthly")
    await reserve(gql, subscriptionId=sub, amount=1, transactionId="short", expiresInSeconds=1)
    await reserve(gql, subscriptionId=sub, amount=2, transactionId="long")
    await asyncio.sleep(1.2)
    before = await full_balance(gql)
    assert await sweep_reservations(db) == 1
    assert await sweep_reservations(db) == 0
    rows = await db.fetch("SELECT transaction_id, status FROM usage_reservations ORDER BY 1")
    assert [tuple(r) for r in rows] == [("long", "held"), ("short", "expired")]
    assert await full_balance(gql) == before
    assert before is not None and before["reservedBalance"] == 2


async def test_the_sweep_goes_customer_by_customer_within_its_limit(gql, db: Database) -> None:
    """One customer's holds per statement (on Citus, its shard), the soonest customers first,
    and never more than the limit in all."""
    await setup_pricing(gql)
    subs = [await customer_on_plan(gql, f"user-{i}", "free_monthly") for i in range(3)]
    for i, sub in enumerate(subs):
        for n in range(2):
            await reserve(
                gql, subscriptionId=sub, amount=1, transactionId=f"h{i}-{n}", expiresInSeconds=1
            )
    await reserve(gql, subscriptionId=subs[0], amount=1, transactionId="long")
    await asyncio.sleep(1.2)
    assert await sweep_reservations(db, limit=3) == 3
    assert (
        await db.fetchval("SELECT count(*) FROM usage_reservations WHERE status = 'expired'") == 3
    )
    assert await sweep_reservations(db, limit=3) == 3
    assert await sweep_reservations(db, limit=3) == 0
    rows = await db.fetch("SELECT transaction_id, status FROM usage_reservations ORDER BY 1")
    assert [tuple(r) for r in rows] == [
        *[(f"h{i}-{n}", "expired") for i in range(3) for n in range(2)],
        ("long", "held"),
    ]


async def test_customer_tokens_hold_their_own_and_never_anothers(gql, db: Database) -> None:
    await setup_pricing(gql)
    await customer_on_plan(gql, "user-1", "free_monthly")
    await customer_on_plan(gql, "user-2", "free_monthly")
    mine = await session_token(gql, "user-1")
    theirs = await session_token(gql, "user-2")
    held = await reserve(gql, token=mine, amount=3)
    assert held["__typename"] == "UsageReserved", held
    assert held["reservation"]["transactionId"].startswith("gen_")
    rid = held["reservation"]["id"]
    # The other customer's token: indistinguishable from a missing reservation.
    for answer in (
        await finalize(gql, rid, 3, token=theirs),
        await release(gql, rid, token=theirs),
        await finalize(gql, "0190a8d6-0000-7000-8000-000000000000", 3, token=theirs),
    ):
        assert (answer["__typename"], answer["field"]) == ("NotFound", ["input", "reservationId"])
    assert await db.fetchval("SELECT status FROM usage_reservations") == "held"
    assert await _counts(db) == (0, 1)
    # Same target rules as events: a non-default price is Forbidden, nothing held.
    cheap = await reserve(gql, token=mine, target={"priceSlug": "generations_discount"}, amount=1)
    assert (cheap["__typename"], cheap["field"]) == (
        "Forbidden",
        ["input", "target", "priceSlug"],
    )
    done = await finalize(gql, rid, 2, token=mine)
    assert done["__typename"] == "UsageEventRecorded", done
    assert done["balance"]["availableBalance"] == 8
    assert await _counts(db) == (1, 1)


async def test_a_batch_answers_balances_net_of_holds(gql, db: Database) -> None:
    await setup_pricing(gql)
    sub = await customer_on_plan(gql, "user-1", "pro_monthly")  # 1,100 credits
    await record(gql, subscriptionId=sub, amount=1, transactionId="seed")  # grants issued
    await reserve(gql, subscriptionId=sub, amount=40, transactionId="hold")
    items = [
        {
            "target": {"usageMeterSlug": "generations"},
            "subscriptionId": sub,
            "amount": 10,
            "transactionId": f"b{i}",
        }
        for i in range(3)
    ]
    results = ok(await gql(CREATE_USAGE_EVENTS, {"input": items}), "createUsageEvents")
    assert [r["balance"]["availableBalance"] for r in results] == [1049, 1039, 1029]
    assert [r["balance"]["usedBalance"] for r in results] == [11, 21, 31]
    # requireBalance in a batch sees the hold too (item by item, under the lock).
    strict = ok(
        await gql(
            CREATE_USAGE_EVENTS,
            {
                "input": [
                    {**items[0], "transactionId": "s1", "amount": 1029, "requireBalance": True},
                    {**items[0], "transactionId": "s2", "amount": 1, "requireBalance": True},
                ]
            },
        ),
        "createUsageEvents",
    )
    assert [r["__typename"] for r in strict] == ["UsageEventRecorded", "InsufficientBalance"]
    assert strict[1]["availableBalance"] == 0
    assert await db.fetchval("SELECT count(*) FROM usage_events") == 5
    assert await reconcile(db) == []
