"""Session revocation, customer tokens dating usage, and 64-bit quantities."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from gateway.storage.db import Database
from tests.conftest import GraphQLClient
from tests.factories import (
    CREATE_USAGE_EVENT,
    CREATE_USAGE_EVENTS,
    customer_on_plan,
    ok,
    record,
    session_token,
    setup_pricing,
)
from tests.servers import gateway_processes

REVOKE = """mutation($e: String!) { revokeCustomerSessions(input: {customerExternalId: $e}) {
  __typename ... on CustomerSessionsRevoked { revokedBefore }
  ... on UserError { code message field } } }"""
EVENT = {
    "query": 'mutation { createUsageEvent(input: {target: {usageMeterSlug: "generations"}})'
    " { __typename } }"
}
REVOKED_BODY = {
    "data": None,
    "errors": [
        {"message": "the session token was revoked", "extensions": {"code": "UNAUTHENTICATED"}}
    ],
}


async def _events(db: Database) -> int:
    count: int = await db.fetchval("SELECT count(*) FROM usage_events")
    return count


async def _revoke(gql: GraphQLClient, external_id: str) -> dict[str, Any]:
    result: dict[str, Any] = ok(await gql(REVOKE, {"e": external_id}), "revokeCustomerSessions")
    return result


# ------------------------------------------------------------------ revocation


async def test_revoked_sessions_fail_and_later_ones_work(
    gql: GraphQLClient, http: httpx.AsyncClient, db: Database
) -> None:
    await setup_pricing(gql)
    await customer_on_plan(gql, "user-1")
    await customer_on_plan(gql, "user-2")
    before = await session_token(gql, "user-1")
    other = await session_token(gql, "user-2")
    assert (await record(gql, token=before))["__typename"] == "UsageEventRecorded"

    revoked = await _revoke(gql, "user-1")
    assert revoked["__typename"] == "CustomerSessionsRevoked"
    stored = await db.fetchval(
        "SELECT sessions_revoked_before FROM customers WHERE external_id = 'user-1'"
    )
    assert datetime.fromisoformat(revoked["revokedBefore"]) == stored

    count = await _events(db)
    response = await http.post(
        "/graphql", json=EVENT, headers={"authorization": f"Bearer {before}"}
    )
    assert (response.status_code, response.json()) == (401, REVOKED_BODY)
    assert await _events(db) == count  # nothing recorded

    after = await session_token(gql, "user-1")
    assert (await record(gql, token=after))["__typename"] == "UsageEventRecorded"
    # Another customer's sessions are untouched.
    assert (await record(gql, token=other))["__typename"] == "UsageEventRecorded"
    assert await _events(db) == count + 2


async def test_revoking_an_unknown_customer_is_not_found(gql: GraphQLClient, db: Database) -> None:
    await setup_pricing(gql)
    assert await _revoke(gql, "nobody") == {
        "__typename": "NotFound",
        "code": "NOT_FOUND",
        "message": "no customer with externalId 'nobody'",
        "field": ["input", "customerExternalId"],
    }
    assert await db.fetchval("SELECT count(*) FROM customers") == 0


async def test_a_customer_token_cannot_revoke(gql: GraphQLClient, db: Database) -> None:
    await setup_pricing(gql)
    await customer_on_plan(gql, "user-1")
    token = await session_token(gql, "user-1")
    response = await gql(REVOKE, {"e": "user-1"}, token=token)
    assert (response.status, response.body) == (
        403,
        {
            "data": None,
            "errors": [
                {
                    "message": "revokeCustomerSessions needs a secret API key",
                    "extensions": {"code": "FORBIDDEN"},
                }
            ],
        },
    )
    assert (
        await db.fetchval(
            "SELECT count(*) FROM customers WHERE sessions_revoked_before IS NOT NULL"
        )
        == 0
    )
    assert (await record(gql, token=token))["__typename"] == "UsageEventRecorded"


async def test_a_revocation_holds_on_every_process(
    gql: GraphQLClient, db: Database, database_url: str, secret_key: str
) -> None:
    await setup_pricing(gql)
    await customer_on_plan(gql, "user-1")
    admin = {"authorization": f"Bearer {secret_key}"}
    with gateway_processes(database_url, 2) as (first, second):
        async with httpx.AsyncClient(timeout=10) as client:

            async def post(url: str, body: dict[str, Any], token: str) -> httpx.Response:
                return await client.post(
                    url + "/graphql", json=body, headers={"authorization": f"Bearer {token}"}
                )

            async def issue(url: str) -> str:
                response = await client.post(
                    url + "/graphql",
                    json={
                        "query": """mutation { createCustomerSession(input:
                          {customerExternalId: "user-1"}) {
                          ... on CustomerSessionCreated { token } } }"""
                    },
                    headers=admin,
                )
                return str(response.json()["data"]["createCustomerSession"]["token"])

            token = await issue(first)
            for url in (first, second):  # valid everywhere before
                response = await post(url, EVENT, token)
                assert response.json() == {
                    "data": {"createUsageEvent": {"__typename": "UsageEventRecorded"}}
                }
            response = await client.post(
                first + "/graphql",
                json={"query": REVOKE, "variables": {"e": "user-1"}},
                headers=admin,
            )
            assert response.json()["data"]["revokeCustomerSessions"]["__typename"] == (
                "CustomerSessionsRevoked"
            )
            # The revoking process forgets the customer at once: its very next request.
            count = await _events(db)
            response = await post(first, EVENT, token)
            assert (response.status_code, response.json()) == (401, REVOKED_BODY)
            assert await _events(db) == count
            # The other one when the trigger's notification arrives: within a second.
            deadline = time.monotonic() + 1
            while (response := await post(second, EVENT, token)).status_code == 200:
                assert time.monotonic() < deadline, "still accepted a second after"
                await asyncio.sleep(0.01)
            assert (response.status_code, response.json()) == (401, REVOKED_BODY)
            count = await _events(db)  # (those accepted before it arrived are recorded)
            response = await post(second, EVENT, token)
            assert (response.status_code, response.json()) == (401, REVOKED_BODY)
            assert await _events(db) == count

            fresh = await issue(second)
            for url in (first, second):
                response = await post(url, EVENT, fresh)
                assert response.json() == {
                    "data": {"createUsageEvent": {"__typename": "UsageEventRecorded"}}
                }
            assert await _events(db) == count + 2


# ------------------------------------------------------------------ customer tokens and time


async def test_a_customer_token_dates_usage_only_in_the_current_period(
    gql: GraphQLClient, db: Database
) -> None:
    await setup_pricing(gql)
    # Monthly from 45 days ago: the current period began about 15 days ago, and the previous
    # one lies inside the 35-day backdating window.
    started = datetime.now(UTC) - timedelta(days=45)
    sub = await customer_on_plan(gql, "user-1", start_date=started.isoformat())
    period_start: datetime = await db.fetchval(
        "SELECT (billing_period(start_date, interval_unit, interval_count, now())).period_start"
        " FROM subscriptions WHERE id = $1::uuid",
        sub,
    )
    assert period_start > started + timedelta(days=27)
    previous = (period_start - timedelta(days=2)).isoformat()
    current = (period_start + timedelta(minutes=1)).isoformat()
    token = await session_token(gql, "user-1")
    count = await _events(db)
    refused = {
        "__typename": "InvalidInput",
        "code": "INVALID_INPUT",
        "message": "a customer session may only date usage inside the current billing period",
        "field": ["input", "usageDate"],
    }

    single = await gql(
        CREATE_USAGE_EVENT,
        {"input": {"target": {"usageMeterSlug": "generations"}, "usageDate": previous}},
        token=token,
    )
    assert {k: v for k, v in ok(single, "createUsageEvent").items() if k in refused} == refused
    batch = ok(
        await gql(
            CREATE_USAGE_EVENTS,
            {
                "input": [
                    {"target": {"usageMeterSlug": "generations"}, "usageDate": d}
                    for d in (current, previous, current, current)
                ]
            },
            token=token,
        ),
        "createUsageEvents",
    )
    assert [r["__typename"] for r in batch] == [
        "UsageEventRecorded",
        "InvalidInput",
        "UsageEventRecorded",
        "UsageEventRecorded",
    ]
    assert batch[1]["field"] == ["input", "1", "usageDate"]
    assert await _events(db) == count + 3
    assert (
        await db.fetchval("SELECT count(*) FROM usage_events WHERE usage_date < $1", period_start)
        == 0
    )

    # The secret key keeps the whole backdating window.
    by_key = await record(
        gql, subscriptionId=sub, transactionId="late", amount=1, usageDate=previous
    )
    assert by_key["__typename"] == "UsageEventRecorded"
    assert datetime.fromisoformat(by_key["usageEvent"]["usageDate"]) == (
        period_start - timedelta(days=2)
    )
    assert await _events(db) == count + 4


# ------------------------------------------------------------------ 64-bit quantities


async def test_usage_past_32_bits_reads_exactly(gql: GraphQLClient) -> None:
    await setup_pricing(gql)
    sub = await customer_on_plan(gql, "user-1")
    for n in range(3):
        result = await record(
            gql,
            target={"usageMeterSlug": "api_calls"},
            subscriptionId=sub,
            transactionId=f"big-{n}",
            amount=1_000_000_000,
        )
        assert result["__typename"] == "UsageEventRecorded", result
        assert result["balance"]["usedBalance"] == 1_000_000_000 * (n + 1)
    balance = ok(
        await gql(
            """{ usageBalance(meterSlug: "api_calls", customerExternalId: "user-1") {
                 usedBalance availableBalance balanceLimit reservedBalance } }"""
        ),
        "usageBalance",
    )
    assert balance == {
        "usedBalance": 3_000_000_000,
        "availableBalance": -3_000_000_000,
        "balanceLimit": None,
        "reservedBalance": 0,
    }
    selection = """usageBalances { usageMeter { slug } usedBalance }
        currentCharges { overageEvents units amount } currentChargeTotals { amount currency }"""
    billing = ok(
        await gql(f'{{ billing(customerExternalId: "user-1") {{ {selection} }} }}'), "billing"
    )
    expected = {
        "usageBalances": [
            {"usageMeter": {"slug": "generations"}, "usedBalance": 0},
            {"usageMeter": {"slug": "api_calls"}, "usedBalance": 3_000_000_000},
            {"usageMeter": {"slug": "unique_users"}, "usedBalance": 0},
        ],
        # 3e9 uncovered events at 2 per 100 events.
        "currentCharges": [
            {"overageEvents": 3_000_000_000, "units": 30_000_000, "amount": 60_000_000}
        ],
        "currentChargeTotals": [{"amount": 60_000_000, "currency": "USD"}],
    }
    assert billing == expected
    page = ok(
        await gql(
            f"{{ customers(first: 10) {{ edges {{ node {{ billing {{ {selection} }} }} }} }} }}"
        ),
        "customers",
    )
    assert page == {"edges": [{"node": {"billing": expected}}]}

    # A batch of three takes the set-based path: the same sums.
    other = await customer_on_plan(gql, "user-2")
    batch = ok(
        await gql(
            CREATE_USAGE_EVENTS,
            {
                "input": [
                    {
                        "target": {"usageMeterSlug": "api_calls"},
                        "subscriptionId": other,
                        "transactionId": f"big-{n}",
                        "amount": 1_000_000_000,
                    }
                    for n in range(3)
                ]
            },
        ),
        "createUsageEvents",
    )
    assert [r["balance"]["usedBalance"] for r in batch] == [
        1_000_000_000,
        2_000_000_000,
        3_000_000_000,
    ]
    balance = ok(
        await gql(
            """{ usageBalance(meterSlug: "api_calls", customerExternalId: "user-2") {
                 usedBalance } }"""
        ),
        "usageBalance",
    )
    assert balance == {"usedBalance": 3_000_000_000}


async def test_no_quantity_column_or_function_result_is_32_bit(db: Database) -> None:
    # Every integer column narrower than bigint, and what it holds: none is a quantity.
    narrow = await db.fetch(
        "SELECT table_name, column_name, data_type FROM information_schema.columns"
        " WHERE table_schema = 'public'"
        " AND data_type IN ('smallint', 'integer', 'real', 'double precision')"
        " ORDER BY 1, 2"
    )
    assert [tuple(r) for r in narrow] == [
        ("prices", "interval_count", "integer"),  # months or days per period
        ("prices", "usage_events_per_unit", "integer"),  # a divisor, set up by the merchant
        ("subscriptions", "interval_count", "integer"),
        ("usage_alerts", "percent_used", "double precision"),  # a percentage threshold
        ("webhook_attempts", "latency_ms", "double precision"),
        ("webhook_attempts", "status_code", "integer"),  # HTTP status
        ("webhook_deliveries", "attempts", "integer"),
        ("webhook_deliveries", "last_status", "integer"),
    ]
    results = await db.fetch(
        "SELECT p.proname, pg_get_function_result(p.oid) AS result FROM pg_proc p"
        " JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public'"
        " AND pg_get_function_result(p.oid) ~ '(integer|numeric)'"
        " ORDER BY 1"
    )
    assert [r["proname"] for r in results] == [
        "evaluate_usage_alerts",  # alert events written
        "evaluate_usage_alerts_batch",
        "fire_usage_alerts",
        "record_usage_batch",  # item_position integer
        "record_usage_events",  # item_position integer
        "sweep_usage_reservations",  # how many rows it tidied
    ]
