"""Work per request: usage events are bounded over all fields of a request, and the rate limit
charges a request by the events it records."""

from __future__ import annotations

import uuid
from typing import Any

from gateway.settings import Settings
from gateway.storage.db import Database
from tests.conftest import GraphQLClient
from tests.factories import customer_on_plan, setup_pricing
from tests.test_http import Clock, bearer, gateway_app

RESULT = "__typename ... on UserError { code message }"


def item(sub: str) -> dict[str, Any]:
    return {
        "target": {"usageMeterSlug": "generations"},
        "subscriptionId": sub,
        "amount": 1,
        "transactionId": uuid.uuid4().hex,
    }


def batches(*sizes: int) -> str:
    """One mutation: an aliased createUsageEvents per size, each of its own variable."""
    variables = ", ".join(f"$b{i}: [CreateUsageEventInput!]!" for i in range(len(sizes)))
    fields = " ".join(
        f"b{i}: createUsageEvents(input: $b{i}) {{ {RESULT} }}" for i in range(len(sizes))
    )
    return f"mutation({variables}) {{ {fields} }}"


async def events(db: Database) -> int:
    count = await db.fetchval("SELECT count(*) FROM usage_events")
    return int(count)


async def test_events_over_the_batch_limit_across_aliases_are_refused_as_a_whole(
    settings: Settings, db: Database, gql: GraphQLClient, secret_key: str
) -> None:
    await setup_pricing(gql)
    sub = await customer_on_plan(gql, "user-1", "pro_monthly")
    async with gateway_app(settings, gateway_max_batch_size=5) as (_app, client):

        async def post(query: str, variables: dict[str, Any]) -> Any:
            response = await client.post(
                "/graphql",
                json={"query": query, "variables": variables},
                headers=bearer(secret_key),
            )
            return response.status_code, response.json()

        refusal = {
            "data": None,
            "errors": [
                {
                    "message": "the request records 6 usage events; at most 5 per request,"
                    " over all its fields",
                    "extensions": {"code": "BAD_USER_INPUT"},
                }
            ],
        }
        # Two batches of 3: each under the limit, 6 together.
        query = batches(3, 3)
        assert await post(
            query, {"b0": [item(sub) for _ in range(3)], "b1": [item(sub) for _ in range(3)]}
        ) == (200, refusal)
        assert await events(db) == 0
        # Single events under six aliases, and in a fragment besides a batch.
        singles = " ".join(f"e{i}: createUsageEvent(input: $e) {{ {RESULT} }}" for i in range(6))
        query = f"mutation($e: CreateUsageEventInput!) {{ {singles} }}"
        assert await post(query, {"e": item(sub)}) == (200, refusal)
        literal = ", ".join(
            f'{{target: {{usageMeterSlug: "generations"}}, subscriptionId: "{sub}",'
            f' transactionId: "lit-{i}"}}'
            for i in range(5)
        )
        query = (
            f"mutation($e: CreateUsageEventInput!) {{ ...F b: createUsageEvents(input: [{literal}])"
            f" {{ {RESULT} }} }} fragment F on Mutation {{ e: createUsageEvent(input: $e)"
            f" {{ {RESULT} }} }}"
        )
        assert await post(query, {"e": item(sub)}) == (200, refusal)
        assert await events(db) == 0
        # Exactly the limit over two fields: recorded.
        status, body = await post(
            batches(3, 2),
            {"b0": [item(sub) for _ in range(3)], "b1": [item(sub) for _ in range(2)]},
        )
        assert status == 200
        assert [r["__typename"] for r in body["data"]["b0"] + body["data"]["b1"]] == [
            "UsageEventRecorded"
        ] * 5
        assert await events(db) == 5


async def test_the_rate_limit_charges_one_unit_per_event(
    settings: Settings, db: Database, gql: GraphQLClient, secret_key: str
) -> None:
    await setup_pricing(gql)
    sub = await customer_on_plan(gql, "user-1", "pro_monthly")
    async with gateway_app(settings, gateway_rate_limit_per_minute=10) as (app, client):
        clock = Clock()
        app.state.rate_limiter.clock = clock

        async def post(query: str, variables: dict[str, Any] | None = None) -> Any:
            response = await client.post(
                "/graphql",
                json={"query": query, "variables": variables or {}},
                headers=bearer(secret_key),
            )
            return response.status_code, response.json()

        def refused(retry_after: int) -> tuple[int, dict[str, Any]]:
            return (
                429,
                {
                    "errors": [
                        {
                            "message": "rate limit of 10 units per minute exceeded:"
                            f" retry in {retry_after} s",
                            "extensions": {"code": "RATE_LIMITED", "retryAfter": retry_after},
                        }
                    ]
                },
            )

        # 10 events in one request: the whole budget.
        status, body = await post(batches(10), {"b0": [item(sub) for _ in range(10)]})
        assert status == 200
        assert [r["__typename"] for r in body["data"]["b0"]] == ["UsageEventRecorded"] * 10
        assert await events(db) == 10
        # A request that records nothing is still limited.
        assert await post("{ __typename }") == refused(6)
        # 11 events never fit a budget of 10: refused, nothing recorded.
        clock.now += 60
        assert await post(batches(11), {"b0": [item(sub) for _ in range(11)]}) == refused(6)
        assert await events(db) == 10
        # 10 requests of one event each: the same budget.
        clock.now += 60
        for _ in range(10):
            status, body = await post(batches(1), {"b0": [item(sub)]})
            assert (status, body["data"]["b0"][0]["__typename"]) == (200, "UsageEventRecorded")
        assert await events(db) == 20
        assert await post(batches(1), {"b0": [item(sub)]}) == refused(6)
        assert await post("{ __typename }") == refused(6)
        assert await events(db) == 20
        # Requests recording nothing cost one unit each.
        clock.now += 60
        for _ in range(10):
            assert await post("{ __typename }") == (200, {"data": {"__typename": "Query"}})
        assert await post("{ __typename }") == refused(6)
        # 2 events when only 1 unit is back (the request's own): refused, nothing recorded.
        clock.now += 6
        assert await post(batches(2), {"b0": [item(sub), item(sub)]}) == refused(6)
        assert await events(db) == 20


async def test_aliased_holds_count_like_events(
    settings: Settings, db: Database, gql: GraphQLClient, secret_key: str
) -> None:
    await setup_pricing(gql)
    sub = await customer_on_plan(gql, "user-1", "pro_monthly")
    async with gateway_app(settings, gateway_max_batch_size=5) as (_app, client):
        holds = " ".join(
            f'r{i}: reserveUsage(input: {{target: {{usageMeterSlug: "generations"}},'
            f' subscriptionId: "{sub}", transactionId: "h{i}", amount: 1}}) {{ {RESULT} }}'
            for i in range(6)
        )
        response = await client.post(
            "/graphql", json={"query": f"mutation {{ {holds} }}"}, headers=bearer(secret_key)
        )
        assert (response.status_code, response.json()) == (
            200,
            {
                "data": None,
                "errors": [
                    {
                        "message": "the request records 6 usage events; at most 5 per request,"
                        " over all its fields",
                        "extensions": {"code": "BAD_USER_INPUT"},
                    }
                ],
            },
        )
        assert await db.fetchval("SELECT count(*) FROM usage_reservations") == 0
