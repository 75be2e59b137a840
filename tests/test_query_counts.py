"""SQL round trips per operation are pinned: they must not grow with the data (no N+1)."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.storage.db import start_counting
from tests.conftest import GraphQLClient
from tests.factories import (
    CREATE_USAGE_EVENT,
    CREATE_USAGE_EVENTS,
    customer_on_plan,
    ok,
    session_token,
    setup_pricing,
)
from tests.reservation_docs import FINALIZE, RELEASE, RESERVE, VOID

DASHBOARD = """
query($first: Int) {
  customers(first: $first) {
    edges { node { externalId billing {
      currentSubscription { id price { slug } currentBillingPeriodEnd
        usageBalances { usageMeter { slug } availableBalance usedBalance percentUsed } }
      subscriptions { status }
      usageBalances { availableBalance }
      catalog { name usageMeters { slug defaultPrice { slug } } }
      currentChargeTotals { amount currency }
      featureAccess(featureSlug: "priority_support")
    } } }
    pageInfo { hasNextPage }
  }
}
"""


async def _customers_with_usage(gql: GraphQLClient, count: int) -> None:
    await setup_pricing(gql)
    items = []
    for i in range(count):
        sub_id = await customer_on_plan(gql, f"user-{i:03d}", "pro_monthly")
        items.append(
            {
                "target": {"usageMeterSlug": "api_calls"},
                "subscriptionId": sub_id,
                "amount": i + 1,
                "transactionId": f"t{i}",
            }
        )
    results = ok(await gql(CREATE_USAGE_EVENTS, {"input": items}), "createUsageEvents")
    assert {r["__typename"] for r in results} == {"UsageEventRecorded"}


@pytest.mark.parametrize("customers", [10, 100])
async def test_dashboard_costs_a_fixed_number_of_round_trips(gql, customers: int) -> None:
    await _customers_with_usage(gql, customers)
    await gql(DASHBOARD, {"first": 1})  # warm the process's catalog cache
    counter = start_counting()
    data = ok(await gql(DASHBOARD, {"first": customers}), "customers")
    assert len(data["edges"]) == customers
    last = data["edges"][-1]["node"]["billing"]
    assert last["currentSubscription"]["usageBalances"][1] == {
        "usageMeter": {"slug": "api_calls"},
        "availableBalance": -customers,
        "usedBalance": customers,
        "percentUsed": None,
    }
    # customers page, subscriptions, balances, charges (the key is cached)
    assert counter.count == 4, counter.statements


async def test_fifty_aliased_balances_cost_a_fixed_number_of_round_trips(gql) -> None:
    await _customers_with_usage(gql, 50)
    fields = "\n".join(
        f'b{i}: usageBalance(meterSlug: "api_calls", customerExternalId: "user-{i:03d}")'
        " { availableBalance }"
        for i in range(50)
    )
    await gql(
        '{ usageBalance(meterSlug: "api_calls", customerExternalId: "user-000")'
        " { availableBalance } }"
    )  # warm the catalog cache
    counter = start_counting()
    data = ok(await gql(f"query {{ {fields} }}"), "b49")
    assert data == {"availableBalance": -50}
    # customers by externalId, their subscriptions, the balances (the key is cached)
    assert counter.count == 3, counter.statements


async def test_a_cold_catalog_costs_one_round_trip(gql, app) -> None:
    await _customers_with_usage(gql, 3)
    app.state.services.catalogs.invalidate()
    counter = start_counting()
    ok(await gql(DASHBOARD, {"first": 3}), "customers")
    assert counter.count == 5, counter.statements


async def test_alert_evaluation_adds_no_round_trip_to_create_usage_event(gql, db) -> None:
    from tests.alert_factories import CREDITS_PRICING, alert_events, create_alert
    from tests.factories import record

    await setup_pricing(gql, CREDITS_PRICING)
    sub_id = await customer_on_plan(gql, "user-1", "daily_plan")
    await create_alert(gql, threshold={"percentUsed": 80})
    await record(
        gql,
        target={"usageMeterSlug": "credits"},
        subscriptionId=sub_id,
        amount=1,
        transactionId="warm",
    )
    counter = start_counting()
    result = await record(
        gql,
        target={"usageMeterSlug": "credits"},
        subscriptionId=sub_id,
        amount=900,
        transactionId="cross",
    )
    assert result["__typename"] == "UsageEventRecorded"
    # record_usage_event(), which evaluates the alert itself (the key is cached)
    assert counter.count == 1, counter.statements
    assert await alert_events(db) == [("triggered", 901)]  # evaluated, and it fired


HISTORIES = """
query($first: Int) {
  customers(first: $first) {
    totalCount
    edges { node { externalId billing {
      usageEvents(first: 5) { totalCount edges { cursor node { amount transactionId } }
                              pageInfo { hasNextPage endCursor } }
      metered: usageEvents(meterSlug: "api_calls", first: 1) { edges { node { amount } } }
    } } }
  }
}
"""


@pytest.mark.parametrize("customers", [10, 100])
async def test_a_dashboard_of_histories_costs_a_fixed_number_of_round_trips(
    gql, customers: int
) -> None:
    await _customers_with_usage(gql, customers)
    await gql(HISTORIES, {"first": 1})  # warm the process's catalog cache
    counter = start_counting()
    data = ok(await gql(HISTORIES, {"first": customers}), "customers")
    assert data["totalCount"] == customers
    last = data["edges"][-1]["node"]["billing"]
    assert last["usageEvents"]["totalCount"] == 1
    assert [e["node"] for e in last["usageEvents"]["edges"]] == [
        {"amount": customers, "transactionId": f"t{customers - 1}"}
    ]
    assert last["metered"]["edges"] == [{"node": {"amount": customers}}]
    # customers page, customer count, every page of both aliases, their counts (key cached)
    assert counter.count == 4, counter.statements


async def test_reservation_and_void_mutations_cost_one_statement_each(gql) -> None:
    await setup_pricing(gql)
    sub = await customer_on_plan(gql, "user-1", "pro_monthly")
    target = {"usageMeterSlug": "generations"}

    async def counted(document: str, field: str, payload: dict[str, object]) -> tuple[int, Any]:
        counter = start_counting()
        result = ok(await gql(document, {"input": payload}), field)
        return counter.count, result

    hold = {"target": target, "subscriptionId": sub, "amount": 5}
    ok(await gql(RESERVE, {"input": {**hold, "transactionId": "warm"}}), "reserveUsage")
    # Each: one call of its database function (the key is cached).
    count, held = await counted(RESERVE, "reserveUsage", {**hold, "transactionId": "r1"})
    assert (count, held["__typename"]) == (1, "UsageReserved")
    rid = held["reservation"]["id"]
    count, done = await counted(
        FINALIZE, "finalizeUsageReservation", {"reservationId": rid, "amount": 3}
    )
    assert (count, done["__typename"]) == (1, "UsageEventRecorded")
    count, other = await counted(RESERVE, "reserveUsage", {**hold, "transactionId": "r2"})
    count, freed = await counted(
        RELEASE, "releaseUsageReservation", {"reservationId": other["reservation"]["id"]}
    )
    assert (count, freed["__typename"]) == (1, "UsageReservationReleased")
    count, voided = await counted(
        VOID, "voidUsageEvent", {"usageEventId": done["usageEvent"]["id"]}
    )
    assert (count, voided["__typename"]) == (1, "UsageEventVoided")
    # The hot path is unchanged: createUsageEvent is still one.
    count, recorded = await counted(
        CREATE_USAGE_EVENT,
        "createUsageEvent",
        {"target": target, "subscriptionId": sub, "amount": 1, "transactionId": "e1"},
    )
    assert (count, recorded["__typename"]) == (1, "UsageEventRecorded")


@pytest.mark.parametrize("caller", ["secret_key", "customer"])
async def test_create_usage_event_is_one_round_trip_with_a_warm_credential_cache(
    gql, app, caller: str
) -> None:
    await setup_pricing(gql)
    sub = await customer_on_plan(gql, "user-1", "pro_monthly")
    token = await session_token(gql, "user-1") if caller == "customer" else "default"

    async def counted(transaction_id: str) -> list[str]:
        payload = {
            "target": {"usageMeterSlug": "generations"},
            "subscriptionId": sub,
            "amount": 1,
            "transactionId": transaction_id,
        }
        counter = start_counting()
        result = ok(
            await gql(CREATE_USAGE_EVENT, {"input": payload}, token=token), "createUsageEvent"
        )
        assert result["__typename"] == "UsageEventRecorded"
        return counter.statements

    await counted("warm")
    warm = await counted("warm-cache")
    assert len(warm) == 1, warm  # the event alone: the credential came from the cache
    assert warm[0].startswith("SELECT record_usage_event(")
    app.state.services.credentials.invalidate()
    cold = await counted("cold-cache")
    table = "api_keys" if caller == "secret_key" else "customers"
    assert len(cold) == 2, cold  # the credential's lookup, then the event
    assert f"FROM {table} WHERE" in cold[0]
    assert cold[1].startswith("SELECT record_usage_event(")
