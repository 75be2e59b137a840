"""Usage alerts on the changes of reservations and voids: a hold, its release, its
finalization and a void are evaluated in their own transaction, on the balance they leave."""

from __future__ import annotations

from typing import Any

from gateway.storage.db import Database
from tests.alert_factories import CREDITS_PRICING, create_alert
from tests.conftest import GraphQLClient
from tests.factories import customer_on_plan, record, setup_pricing
from tests.reservation_docs import finalize, release, reserve, void

CREDITS = {"usageMeterSlug": "credits"}  # 1,000 credits a day (CREDITS_PRICING)


async def _events(db: Database) -> list[tuple[str, int, int]]:
    """(type, usedBalance, availableBalance) of every alert event's payload, oldest first."""
    rows = await db.fetch(
        "SELECT type, (payload -> 'data' -> 'balance' ->> 'usedBalance')::bigint AS used,"
        " (payload -> 'data' -> 'balance' ->> 'availableBalance')::bigint AS available"
        " FROM usage_alert_events ORDER BY occurred_at, id"
    )
    return [(r["type"], r["used"], r["available"]) for r in rows]


async def _hold(gql: GraphQLClient, sub: str, amount: int, tx: str) -> dict[str, Any]:
    held = await reserve(gql, target=CREDITS, subscriptionId=sub, amount=amount, transactionId=tx)
    assert held["__typename"] == "UsageReserved", held
    return held


async def _use(gql: GraphQLClient, sub: str, amount: int, tx: str) -> dict[str, Any]:
    result = await record(gql, target=CREDITS, subscriptionId=sub, amount=amount, transactionId=tx)
    assert result["__typename"] == "UsageEventRecorded", result
    return result


async def _start(gql: GraphQLClient, threshold: dict[str, int]) -> str:
    await setup_pricing(gql, CREDITS_PRICING)
    sub = await customer_on_plan(gql, "user-1", "daily_plan")
    assert (await create_alert(gql, threshold=threshold))["__typename"] == "UsageAlertCreated"
    return sub


async def test_a_hold_below_the_threshold_triggers_once_and_its_release_resolves_once(
    gql: GraphQLClient, db: Database
) -> None:
    sub = await _start(gql, {"availableBelow": 300})
    first = await _hold(gql, sub, 600, "h1")
    assert first["balance"]["availableBalance"] == 400
    assert await _events(db) == []  # 400 is not at or below 300

    crossing = await _hold(gql, sub, 200, "h2")
    assert crossing["balance"]["availableBalance"] == 200
    assert await _events(db) == [("triggered", 0, 200)]
    # A replay of the crossing hold, and another hold still below: nothing more.
    replay = await _hold(gql, sub, 200, "h2")
    assert replay["replayed"] is True
    await _hold(gql, sub, 50, "h3")  # available 150
    assert await _events(db) == [("triggered", 0, 200)]

    freed = await release(gql, crossing["reservation"]["id"])
    assert freed["__typename"] == "UsageReservationReleased", freed
    assert freed["balance"]["availableBalance"] == 350  # 1,000 - 600 - 50
    expected = [("triggered", 0, 200), ("resolved", 0, 350)]
    assert await _events(db) == expected
    # Releasing it again, or releasing another hold: the period has fired both of its events.
    again = await release(gql, crossing["reservation"]["id"])
    assert again["reservation"]["status"] == "RELEASED"
    await release(gql, first["reservation"]["id"])
    assert await _events(db) == expected
    assert await db.fetchval("SELECT count(*) FROM usage_events") == 0


async def test_a_used_above_alert_crossed_by_an_event_resolves_when_the_event_is_voided(
    gql: GraphQLClient, db: Database
) -> None:
    sub = await _start(gql, {"usedAbove": 500})
    await _use(gql, sub, 400, "a")
    assert await _events(db) == []
    crossing = await _use(gql, sub, 200, "b")
    assert crossing["balance"]["usedBalance"] == 600
    assert await _events(db) == [("triggered", 600, 400)]

    voided = await void(gql, crossing["usageEvent"]["id"], "double count")
    assert voided["__typename"] == "UsageEventVoided", voided
    assert (voided["balance"]["usedBalance"], voided["balance"]["availableBalance"]) == (400, 600)
    expected = [("triggered", 600, 400), ("resolved", 400, 600)]
    assert await _events(db) == expected
    # The void is idempotent: a repeat writes no second RESOLVED.
    repeat = await void(gql, crossing["usageEvent"]["id"], "double count")
    assert repeat["__typename"] == "UsageEventVoided", repeat
    assert await _events(db) == expected


async def test_finalizing_a_hold_evaluates_the_final_balance_only(
    gql: GraphQLClient, db: Database
) -> None:
    sub = await _start(gql, {"availableBelow": 300})
    held = await _hold(gql, sub, 400, "llm-1")  # available 600
    # 500 used and the hold freed: available 500. While the event is recorded the hold still
    # counts (1,000 - 500 - 400 = 100, below 300); that intermediate balance fires nothing.
    done = await finalize(gql, held["reservation"]["id"], 500)
    assert done["__typename"] == "UsageEventRecorded", done
    assert (done["balance"]["usedBalance"], done["balance"]["availableBalance"]) == (500, 500)
    assert await _events(db) == []

    second = await _hold(gql, sub, 100, "llm-2")  # available 400
    assert await _events(db) == []
    crossed = await finalize(gql, second["reservation"]["id"], 300)  # used 800, available 200
    assert (crossed["balance"]["usedBalance"], crossed["balance"]["availableBalance"]) == (
        800,
        200,
    )
    assert await _events(db) == [("triggered", 800, 200)]
    # A replayed finalization writes nothing more.
    replay = await finalize(gql, second["reservation"]["id"], 300)
    assert replay["replayed"] is True
    assert await _events(db) == [("triggered", 800, 200)]


async def test_holds_releases_finalizations_and_voids_that_cross_nothing_write_no_event(
    gql: GraphQLClient, db: Database
) -> None:
    sub = await _start(gql, {"availableBelow": 100})
    assert (await create_alert(gql, threshold={"usedAbove": 900}))["__typename"] == (
        "UsageAlertCreated"
    )
    kept = await _hold(gql, sub, 300, "h1")
    freed = await _hold(gql, sub, 200, "h2")
    await release(gql, freed["reservation"]["id"])
    done = await finalize(gql, kept["reservation"]["id"], 350)
    assert (done["balance"]["usedBalance"], done["balance"]["availableBalance"]) == (350, 650)
    event = await _use(gql, sub, 100, "e1")
    await void(gql, event["usageEvent"]["id"])
    assert await _events(db) == []
    assert await db.fetchval("SELECT count(*) FROM webhook_deliveries") == 0
