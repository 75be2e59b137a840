"""The compiled lane answers exactly as strawberry's pipeline does (gateway.api.compiled_lane).

Every case goes to two apps on the same database: the suite's app (lane on) and one with the
lane turned off (``GATEWAY_COMPILED_LANE=false``). Each document is made unique per test (a
comment with a random id) so that what the session's app has learned elsewhere does not count.
A case is sent to the lane app once first (strawberry answers it, records what is new, and
the lane learns the document); the two answers compared are then replays or refusals, which
are deterministic: status, headers (but the request id) and body must be equal, byte for byte.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from gateway.api.compiled_lane import CompiledLane
from gateway.settings import Settings
from gateway.storage.db import Database
from gateway.storage.unavailable import DatabaseUnavailable
from tests.conftest import GraphQLClient, running_app
from tests.factories import EVENT_FIELDS, customer_on_plan, session_token, setup_pricing
from tests.test_http import Clock, gateway_app

RESULT = f"""
  __typename
  ... on UsageEventRecorded {{ replayed usageEvent {{ {EVENT_FIELDS} }}
    balance {{ availableBalance usedBalance balanceLimit percentUsed meter: usageMeter {{ slug }} }} }}
  ... on UserError {{ code message field }}
  ... on InsufficientBalance {{ availableBalance required }}
  ... on IdempotencyConflict {{ existingEvent {{ id amount }} }}
"""


def documents() -> dict[str, str]:
    tag = uuid.uuid4().hex
    return {
        "one": f"# {tag}\nmutation One($input: CreateUsageEventInput!) {{"
        f" createUsageEvent(input: $input) {{ {RESULT} }} }}",
        "many": f"# {tag}\nmutation Many($input: [CreateUsageEventInput!]!) {{"
        f" createUsageEvents(input: $input) {{ {RESULT} }} }}",
    }


@pytest.fixture(scope="module")
async def laneless_app(settings: Settings) -> AsyncIterator[Any]:
    async with running_app(settings, gateway_compiled_lane=False) as application:
        yield application


@pytest.fixture
async def both(
    app: Any, http: httpx.AsyncClient, laneless_app: Any, db: Database
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient, CompiledLane]]:
    assert laneless_app.state.compiled_lane is None
    lane = app.state.compiled_lane
    assert isinstance(lane, CompiledLane)
    transport = httpx.ASGITransport(app=laneless_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as plain:
        yield http, plain, lane


async def post(
    client: httpx.AsyncClient,
    body: Any,
    token: str | None,
    headers: dict[str, str] | None = None,
) -> tuple[int, list[tuple[str, str]], bytes]:
    sent = {"Authorization": f"Bearer {token}"} if token else {}
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = await client.post(
        "/graphql",
        content=content,
        headers={"Content-Type": "application/json", **sent, **(headers or {})},
    )
    kept = sorted((k, v) for k, v in response.headers.items() if k != "x-request-id")
    return response.status_code, kept, response.content


async def usage_rows(db: Database) -> int:
    return int(await db.fetchval("SELECT count(*) FROM usage_events"))


async def compare(
    both: tuple[httpx.AsyncClient, httpx.AsyncClient, CompiledLane],
    db: Database,
    body: Any,
    token: str | None,
    headers: dict[str, str] | None = None,
    *,
    laned: bool,
) -> tuple[int, bytes]:
    """Send ``body`` to the lane app (strawberry answers and the lane learns), then to both;
    the two later answers must be equal, and must have written nothing. ``laned``: whether
    the lane answered the later one."""
    fast, plain, lane = both
    await post(fast, body, token, headers)
    rows = await usage_rows(db)
    answered = lane.answered
    without = await post(plain, body, token, headers)
    with_lane = await post(fast, body, token, headers)
    assert with_lane == without, body
    assert lane.answered - answered == (1 if laned else 0), body
    assert await usage_rows(db) == rows  # replays and refusals only: nothing new written
    return without[0], without[2]


@pytest.fixture
async def billing(gql: GraphQLClient) -> dict[str, str]:
    await setup_pricing(gql)
    sub = await customer_on_plan(gql, "user-1", "pro_monthly")
    free = await customer_on_plan(gql, "user-2", "free_monthly")
    return {
        "sub": sub,
        "free": free,
        "key": gql.token or "",
        "session": await session_token(gql, "user-1"),
    }


def event(billing: dict[str, str], tx: str, **fields: Any) -> dict[str, Any]:
    return {
        "target": {"usageMeterSlug": "generations"},
        "subscriptionId": billing["sub"],
        "amount": 1,
        "transactionId": tx,
        **fields,
    }


async def test_answers_are_identical_with_and_without_the_lane(
    both, db: Database, billing: dict[str, str]
) -> None:
    docs = documents()
    one, many = docs["one"], docs["many"]
    key, session = billing["key"], billing["session"]
    laned = [
        ({"query": one, "variables": {"input": event(billing, "a")}}, key, None),
        ({"query": one, "variables": {"input": event(billing, "a", amount=2)}}, key, None),
        (  # the operation named as sent, and the other media type
            {"query": one, "variables": {"input": event(billing, "b")}, "operationName": "One"},
            key,
            {"Accept": "application/graphql-response+json"},
        ),
        (
            {"query": one, "variables": {"input": event(billing, "c", amount=0)}},
            key,
            None,
        ),  # InvalidInput
        (
            {
                "query": one,
                "variables": {
                    "input": event(
                        billing, "d", subscriptionId=billing["free"], requireBalance=True
                    )
                },
            },
            key,
            None,
        ),  # InsufficientBalance
        (
            {"query": one, "variables": {"input": event(billing, "e", amount="x")}},
            key,
            None,
        ),  # variable coercion errors: nothing runs
        ({"query": one, "variables": None}, key, None),
        ({"query": one}, key, {"Accept": "application/graphql-response+json"}),
        (
            {
                "query": one,
                "variables": {
                    "input": {
                        "target": {"usageMeterSlug": "generations"},
                        "amount": 3,
                        "transactionId": "s1",
                    }
                },
            },
            session,
            None,
        ),  # a customer session, learned for its own kind of caller
        ({"query": many, "variables": {"input": [event(billing, "m1")]}}, key, None),
        # two events: the lane charges the rate limit one more token, as strawberry's budget
        (
            {"query": many, "variables": {"input": [event(billing, "m2"), event(billing, "m3")]}},
            key,
            None,
        ),
    ]
    for body, token, headers in laned:
        await compare(both, db, body, token, headers, laned=True)

    strawberry_only = [
        # another shape of body: an unknown key, extensions, a list, an operation name that is
        # not a string, invalid JSON
        ({"query": one, "variables": {"input": event(billing, "a")}, "x": 1}, key),
        (
            {
                "query": one,
                "variables": {"input": event(billing, "a")},
                "extensions": {"persistedQuery": {"version": 1, "sha256Hash": "0" * 64}},
            },
            key,
        ),
        ([{"query": one, "variables": {"input": event(billing, "a")}}], key),
        ({"query": one, "variables": {"input": event(billing, "a")}, "operationName": 3}, key),
        (b'{"query": ', key),
        ({"query": one, "variables": []}, key),
        # an operation name the document does not define
        ({"query": one, "variables": {"input": event(billing, "a")}, "operationName": "X"}, key),
        # anonymous: refused before the lane is asked
        ({"query": one, "variables": {"input": event(billing, "a")}}, None),
    ]
    for body, token in strawberry_only:
        await compare(both, db, body, token, laned=False)


async def test_a_text_learned_for_secret_keys_is_not_answered_for_a_session(
    both, db: Database, billing: dict[str, str], gql: GraphQLClient
) -> None:
    fast, _plain, lane = both
    query = f"# {uuid.uuid4().hex}\nquery {{ __typename }}"
    one = documents()["one"]
    body = {"query": one, "variables": {"input": event(billing, "k1")}}
    await post(fast, body, billing["key"])
    await post(fast, body, billing["key"])
    answered = lane.answered
    # The session's first request with this text: strawberry's gate and rules, not the lane.
    status, _headers, content = await post(fast, body, billing["session"])
    assert lane.answered == answered
    assert status == 200
    assert json.loads(content)["data"]["createUsageEvent"]["__typename"] == "UsageEventRecorded"
    # A query is never compiled: never learned.
    for _ in range(2):
        await post(fast, {"query": query}, billing["key"])
    assert lane.answered == answered


async def test_errors_are_masked_and_answered_with_their_status_as_without_the_lane(
    both, db: Database, billing: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fast, plain, lane = both
    one = documents()["one"]
    body = {"query": one, "variables": {"input": event(billing, "u1")}}
    await post(fast, body, billing["key"])  # learned
    rows = await usage_rows(db)

    async def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("boom: internal detail")

    async def unavailable(*_args: Any, **_kwargs: Any) -> Any:
        raise DatabaseUnavailable("the database is restarting")

    for failure, status, code in (
        (broken, 200, "INTERNAL_SERVER_ERROR"),
        (unavailable, 503, "SERVICE_UNAVAILABLE"),
    ):
        monkeypatch.setattr("gateway.billing.usage.record_usage_event", failure)
        answers = []
        answered = lane.answered
        for client in (plain, fast):
            got_status, headers, content = await post(client, body, billing["key"])
            answer = json.loads(content)
            for error in answer.get("errors", []):
                error_id = error["extensions"].pop("errorId", None)
                if error_id:
                    error["message"] = error["message"].replace(error_id, "ID")
            answers.append((got_status, [h for h in headers if h[0] != "content-length"], answer))
        assert lane.answered == answered + 1
        assert answers[0] == answers[1]
        got_status, headers, answer = answers[1]
        assert got_status == status
        assert answer["data"] is None
        assert [e["extensions"]["code"] for e in answer["errors"]] == [code]
        assert "boom" not in json.dumps(answer)
        assert await usage_rows(db) == rows


async def test_the_lane_charges_the_rate_limit_one_token_per_event_as_the_budget_does(
    settings: Settings, db: Database, billing: dict[str, str]
) -> None:
    tag = uuid.uuid4().hex
    many = (
        f"# {tag}\nmutation Many($input: [CreateUsageEventInput!]!)"
        " { createUsageEvents(input: $input) { __typename } }"
    )
    async with gateway_app(
        settings, gateway_rate_limit_per_minute=10, gateway_max_batch_size=5
    ) as (app, client):
        lane = app.state.compiled_lane
        assert isinstance(lane, CompiledLane)
        clock = Clock()
        app.state.rate_limiter.clock = clock
        seen = iter(range(1000))

        async def send(query: str, **variables: int) -> tuple[int, Any]:
            values = {
                name: [event(billing, f"{tag}-{next(seen)}") for _ in range(n)]
                for name, n in variables.items()
            }
            status, _headers, content = await post(
                client, {"query": query, "variables": values}, billing["key"]
            )
            return status, json.loads(content)

        def recorded(n: int) -> list[dict[str, str]]:
            return [{"__typename": "UsageEventRecorded"}] * n

        refused = {
            "errors": [
                {
                    "message": "rate limit of 10 units per minute exceeded: retry in 6 s",
                    "extensions": {"code": "RATE_LIMITED", "retryAfter": 6},
                }
            ]
        }
        rows = await usage_rows(db)
        # 3 events by strawberry (the lane learns the text), then 3 by the lane: 6 tokens.
        status, body = await send(many, input=3)
        assert (status, body["data"]["createUsageEvents"]) == (200, recorded(3))
        assert lane.answered == 0
        status, body = await send(many, input=3)
        assert (status, body["data"]["createUsageEvents"]) == (200, recorded(3))
        assert lane.answered == 1
        assert await usage_rows(db) == rows + 6
        # 4 tokens left: 5 events do not fit; refused as strawberry's budget refuses them.
        assert await send(many, input=5) == (429, refused)
        assert lane.answered == 1
        assert await usage_rows(db) == rows + 6
        # 3 tokens left (the refused request's own was taken): 3 events fit, by the lane.
        status, body = await send(many, input=3)
        assert (status, body["data"]["createUsageEvents"]) == (200, recorded(3))
        assert lane.answered == 2
        assert await usage_rows(db) == rows + 9
        assert await send(many, input=1) == (429, refused)
        assert await usage_rows(db) == rows + 9
        # One field over the batch limit: every item InvalidInput, by the lane, and nothing
        # charged beyond the request's own token, as under strawberry's budget.
        clock.now += 60
        status, body = await send(many, input=6)
        assert status == 200
        assert [r["__typename"] for r in body["data"]["createUsageEvents"]] == ["InvalidInput"] * 6
        assert lane.answered == 3
        assert await usage_rows(db) == rows + 9
        # 9 tokens left: 9 requests of one event, by the lane; the tenth is refused.
        for _ in range(9):
            status, body = await send(many, input=1)
            assert (status, body["data"]["createUsageEvents"]) == (200, recorded(1))
        assert lane.answered == 12
        assert await send(many, input=1) == (429, refused)
        assert await usage_rows(db) == rows + 18


def operations(outcome: str) -> float:
    labels = {"operation": "One", "type": "mutation", "outcome": outcome}
    return REGISTRY.get_sample_value("gateway_graphql_operations_total", labels) or 0.0


async def test_the_lane_counts_operations_as_the_metrics_extension_does(
    both, db: Database, billing: dict[str, str]
) -> None:
    fast, _plain, lane = both
    one = documents()["one"]
    ok, request_error = operations("ok"), operations("request_error")
    await post(fast, {"query": one, "variables": {"input": event(billing, "o1")}}, billing["key"])
    answered = lane.answered
    await post(fast, {"query": one, "variables": {"input": event(billing, "o2")}}, billing["key"])
    await post(fast, {"query": one, "variables": {"input": {"amount": 1}}}, billing["key"])
    assert lane.answered == answered + 2
    assert operations("ok") == ok + 2
    assert operations("request_error") == request_error + 1
    assert await usage_rows(db) == 2


@hypothesis_settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    items=st.lists(
        st.tuples(
            st.sampled_from(["t1", "t2", "t3"]),  # few transaction ids: replays and conflicts
            st.sampled_from([1, 2, 0, -1, 10**9]),
            st.booleans(),  # requireBalance
            st.sampled_from(["sub", "free", "missing"]),
        ),
        min_size=1,
        max_size=6,
    )
)
async def test_mixed_requests_answer_alike_with_and_without_the_lane(
    both, db: Database, billing: dict[str, str], items: list[tuple[str, int, bool, str]]
) -> None:
    one = documents()["one"]
    subscriptions = {**billing, "missing": str(uuid.UUID(int=7))}
    for tx, amount, require, which in items:
        body = {
            "query": one,
            "variables": {
                "input": event(
                    billing,
                    f"{tx}-{which}",
                    amount=amount,
                    requireBalance=require,
                    subscriptionId=subscriptions[which],
                )
            },
        }
        await compare(both, db, body, billing["key"], laned=True)
