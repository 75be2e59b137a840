"""The compiled executor answers exactly as graphql-core does (gateway.api.graphql_fast).

Every case is sent to two apps on the same database, one with the compiled path and one with
it turned off (``GATEWAY_COMPILED_EXECUTION=false``). A case that records an event is sent
once first, so both answers compared are replays or refusals, which are deterministic: the
bodies must be equal byte for byte, keys in the same order.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from graphql import parse

from gateway.settings import Settings
from gateway.storage.db import Database
from schema import build_schema
from tests.conftest import GraphQLClient, running_app
from tests.factories import (
    CREATE_USAGE_EVENT,
    CREATE_USAGE_EVENTS,
    EVENT_FIELDS,
    customer_on_plan,
    session_token,
    setup_pricing,
)


@pytest.fixture(scope="module")
async def graphql_core_app(settings: Settings) -> AsyncIterator[Any]:
    async with running_app(settings, gateway_compiled_execution=False) as application:
        yield application


@pytest.fixture
async def both(
    http: httpx.AsyncClient, graphql_core_app: Any, secret_key: str, db: Database
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    transport = httpx.ASGITransport(app=graphql_core_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as plain:
        yield http, plain


async def post(client: httpx.AsyncClient, body: dict[str, Any], token: str | None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = await client.post("/graphql", json=body, headers=headers)
    return response.status_code, response.content


ALL_FIELDS = f"""
  kind: __typename
  ... on CreateUsageEventResult {{ __typename }}
  ... on UsageEventRecorded {{
    replayed
    event: usageEvent {{ {EVENT_FIELDS} }}
    usageEvent {{ id amount }}
    balance {{ __typename subscriptionId availableBalance usedBalance balanceLimit percentUsed
              billingPeriodStart billingPeriodEnd meter: usageMeter {{ slug id }} }}
  }}
  ... on UserError {{ code message field }}
  ... {{ __typename }}
  ... on InsufficientBalance {{ meterSlug availableBalance required upgradeOptions {{ slug }} }}
  ... on IdempotencyConflict {{ existingEvent {{ {EVENT_FIELDS} }} }}
"""
ONE = f"mutation One($input: CreateUsageEventInput!) {{ r: createUsageEvent(input: $input) {{ {ALL_FIELDS} }} }}"
MANY = f"""mutation Many($input: [CreateUsageEventInput!]!) {{
  createUsageEvents(input: $input) {{ {ALL_FIELDS} }} }}"""
LITERAL = """mutation($sub: ID, $tx: String, $n: Int) {
  createUsageEvent(input: {target: {usageMeterSlug: "api_calls"}, subscriptionId: $sub,
                           amount: $n, transactionId: $tx}) {
    __typename ... on UsageEventRecorded { usageEvent { amount transactionId } }
    ... on UserError { code field } } }"""
SMALL = """mutation($input: CreateUsageEventInput!) { createUsageEvent(input: $input) {
  __typename ... on UsageEventRecorded { replayed balance { availableBalance } } } }"""

COMPILED = [CREATE_USAGE_EVENT, CREATE_USAGE_EVENTS, ONE, MANY, LITERAL, SMALL]
NOT_COMPILED = [
    # a named fragment, a directive, a second root field, a query
    "fragment R on UsageEventRecorded { replayed }\n"
    "mutation($input: CreateUsageEventInput!) { createUsageEvent(input: $input) { ...R } }",
    "mutation($input: CreateUsageEventInput!, $b: Boolean!) { createUsageEvent(input: $input) {"
    " __typename @include(if: $b) } }",
    "mutation($input: CreateUsageEventInput!) { a: createUsageEvent(input: $input) { __typename }"
    " b: createUsageEvent(input: $input) { __typename } }",
    "query { __typename }",
]


def test_which_documents_are_compiled() -> None:
    fast = build_schema()._fast  # type: ignore[attr-defined]
    assert [fast.plan(parse(d), None) is not None for d in COMPILED] == [True] * len(COMPILED)
    assert [fast.plan(parse(d), None) for d in NOT_COMPILED] == [None] * len(NOT_COMPILED)
    assert build_schema(fast=False)._fast is None  # type: ignore[attr-defined]
    # Arguments that are the operation's variables are coerced by the compiled coercers;
    # literal arguments, or a variable the field does not take, by graphql-core.
    extra = "mutation($input: CreateUsageEventInput!, $x: Int) { createUsageEvent(input: $input) { __typename } }"
    direct = {d: fast.plan(parse(d), None).direct for d in [ONE, MANY, SMALL, LITERAL, extra]}
    assert [v is not None for v in direct.values()] == [True, True, True, False, False]
    assert [(v, k) for v, k, _coerce in direct[MANY]] == [("input", "input")]


async def test_compiled_and_graphql_core_answers_are_identical(both, gql: GraphQLClient) -> None:
    fast, plain = both
    await setup_pricing(gql)
    sub = await customer_on_plan(gql, "user-1", "pro_monthly")
    free = await customer_on_plan(gql, "user-2", "free_monthly")
    token = await session_token(gql, "user-1")
    key = gql.token
    soon = (datetime.now(UTC) + timedelta(minutes=1)).isoformat()

    def event(tx: str, **fields: Any) -> dict[str, Any]:
        return {
            "target": {"usageMeterSlug": "generations"},
            "subscriptionId": sub,
            "amount": 1,
            "transactionId": tx,
            **fields,
        }

    cases: list[tuple[str, dict[str, Any], str | None]] = [
        (ONE, {"input": event("a")}, key),
        (ONE, {"input": event("b", amount=7, usageDate=soon)}, key),
        (ONE, {"input": event("b2", usageDate="2000-01-01T00:00:00Z")}, key),
        (
            ONE,
            {
                "input": event(
                    "c",
                    target={"usageMeterSlug": "unique_users"},
                    properties={"user": "u1", "n": 1.0},
                )
            },
            key,
        ),
        (ONE, {"input": event("a", amount=2)}, key),  # IdempotencyConflict
        (ONE, {"input": event("d", subscriptionId=free, requireBalance=True)}, key),
        (ONE, {"input": event("e", amount=0)}, key),  # InvalidInput
        (ONE, {"input": event("f", subscriptionId="00000000-0000-0000-0000-000000000000")}, key),
        (ONE, {"input": event("g", target={"priceSlug": "nope"})}, key),
        (ONE, {"input": {"target": {"usageMeterSlug": "generations"}}}, key),  # missing fields
        (
            ONE,
            {
                "input": {
                    "target": {"usageMeterSlug": "generations"},
                    "amount": 3,
                    "transactionId": "s1",
                }
            },
            token,
        ),  # customer session
        (ONE, {"input": event("h", amount="x")}, key),  # variable errors: nothing runs
        (ONE, {"input": event("i", target={"usageMeterSlug": "a", "priceSlug": "b"})}, key),
        (ONE, {"input": {"amount": 1}}, key),
        (ONE, {}, key),
        (ONE, {"input": event("j")}, None),  # anonymous: 401 before execution
        (
            MANY,
            {
                "input": [
                    event("k"),
                    event("k"),
                    event("l", amount=-1),
                    event("m", target={"usageMeterId": "not-a-uuid"}),
                    event("a", amount=5),
                    event("n", subscriptionId=free, requireBalance=True, amount=10**6),
                ]
            },
            key,
        ),
        (MANY, {"input": []}, key),
        (MANY, {"input": event("r")}, key),  # a list of one
        (
            MANY,
            {"input": [event("s"), event("t", target={"priceSlug": "a", "usageMeterSlug": "b"})]},
            key,
        ),
        (MANY, {"input": [event("u"), None]}, key),
        (MANY, {"input": [event(f"p{i}") for i in range(30)]}, key),
        (LITERAL, {"sub": sub, "tx": "lit-1", "n": 4}, key),
        (LITERAL, {"sub": sub, "tx": "lit-2"}, key),  # amount omitted by a secret key
        (SMALL, {"input": event("q")}, key),
    ]
    for document, variables, caller in cases:
        body = {"query": document, "variables": variables}
        first = await post(fast, body, caller)  # records what is new
        answers = [await post(plain, body, caller), await post(fast, body, caller)]
        assert answers[0] == answers[1], (variables, answers)
        status, content = answers[0]
        assert status in (200, 401), content
        # The first answer differs only in having recorded the events (and, in a batch, in
        # the balance after each of them).
        ignored = {"replayed", "balance"} if document is MANY else {"replayed"}
        assert first[0] == status
        assert strip(json.loads(first[1]), ignored) == strip(json.loads(content), ignored)


def strip(value: Any, keys: set[str]) -> Any:
    if isinstance(value, dict):
        return {k: strip(v, keys) for k, v in value.items() if k not in keys}
    if isinstance(value, list):
        return [strip(v, keys) for v in value]
    return value


async def test_an_unexpected_error_is_masked_the_same_way(
    both, gql: GraphQLClient, monkeypatch
) -> None:
    """A bug in the resolver: the same masked top-level error from both paths (its id aside),
    with data null (the root field is non-null)."""
    fast, plain = both
    await setup_pricing(gql)
    sub = await customer_on_plan(gql, "user-1", "pro_monthly")

    async def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("boom: internal detail")

    monkeypatch.setattr("gateway.billing.usage.record_usage_event", broken)
    body = {
        "query": SMALL,
        "variables": {
            "input": {
                "target": {"usageMeterSlug": "generations"},
                "subscriptionId": sub,
                "amount": 1,
                "transactionId": "t",
            }
        },
    }
    answers = []
    for client in (fast, plain):
        status, content = await post(client, body, gql.token)
        answer = json.loads(content)
        for error in answer.get("errors", []):
            error["message"] = error["message"].replace(error["extensions"].pop("errorId"), "ID")
        answers.append((status, answer))
    assert answers[0] == answers[1]
    status, answer = answers[0]
    assert status == 200
    assert answer["data"] is None
    assert [e["extensions"]["code"] for e in answer["errors"]] == ["INTERNAL_SERVER_ERROR"]
    assert "boom" not in json.dumps(answer)


def test_the_installed_strawberry_is_one_the_compiled_path_is_proven_on() -> None:
    from gateway.api import graphql_fast

    assert graphql_fast.proven(), (
        f"strawberry {graphql_fast.STRAWBERRY_VERSION} is not in PROVEN_STRAWBERRY"
        f" {graphql_fast.PROVEN_STRAWBERRY}: the compiled path reads strawberry's type"
        " definitions. Run this module's comparisons on it, fix what differs, then add it."
    )


def test_on_another_strawberry_every_document_goes_to_graphql_core(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from gateway.api import graphql_fast

    assert build_schema()._fast is not None  # type: ignore[attr-defined]
    monkeypatch.setattr(graphql_fast, "STRAWBERRY_VERSION", "0.999.0")
    assert build_schema()._fast is None  # type: ignore[attr-defined]
