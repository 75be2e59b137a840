"""GraphQL over HTTP: limits at their exact thresholds, rate limiting, negotiation, error bodies.

Limits are tested on separately built apps with small settings (``gateway``), on the same
database as the shared app.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

import gateway.api.app
from gateway.api.app import create_app
from gateway.api.http import GRAPHQL_RESPONSE_MEDIA, negotiate
from gateway.api.rate_limit import RateLimiter
from gateway.billing import customers
from gateway.callers import authz
from gateway.settings import Settings
from gateway.storage.db import Database
from tests.conftest import GraphQLClient

TYPENAME = {"query": "{ __typename }"}
JSON_HEADERS = {"content-type": "application/json"}


@asynccontextmanager
async def gateway_app(
    settings: Settings, client_address: tuple[str, int] = ("127.0.0.1", 123), **overrides: Any
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """A separately built app with ``overrides`` of the test settings, and a client on it."""
    custom = Settings(
        **{
            **settings.model_dump(),
            "gateway_pool_min_size": 1,
            "gateway_pool_max_size": 2,
            **overrides,
        }
    )
    app = create_app(custom, settings.database_url or "")
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=client_address)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as client:
            yield app, client


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# ------------------------------------------------------------------ rate limiting


def rate_limited(retry_after: int, limit: int = 3) -> dict[str, Any]:
    return {
        "errors": [
            {
                "message": f"rate limit of {limit} units per minute exceeded: retry in {retry_after} s",
                "extensions": {"code": "RATE_LIMITED", "retryAfter": retry_after},
            }
        ]
    }


async def test_rate_limit_per_secret_key_at_its_exact_threshold(
    settings: Settings, db: Database, secret_key: str, gql: GraphQLClient
) -> None:
    from gateway.callers.auth import create_api_key

    _, other_key = await create_api_key(db, "other")
    async with gateway_app(settings, gateway_rate_limit_per_minute=3) as (app, client):
        clock = Clock()
        app.state.rate_limiter.clock = clock
        for _ in range(3):
            response = await client.post("/graphql", json=TYPENAME, headers=bearer(secret_key))
            assert (response.status_code, response.json()) == (
                200,
                {"data": {"__typename": "Query"}},
            )
        refused = await client.post("/graphql", json=TYPENAME, headers=bearer(secret_key))
        assert (refused.status_code, refused.json()) == (429, rate_limited(20))
        assert refused.headers["retry-after"] == "20"
        assert refused.headers["content-type"] == "application/json"
        # Another key has its own bucket.
        response = await client.post("/graphql", json=TYPENAME, headers=bearer(other_key))
        assert response.status_code == 200
        # The bucket refills at 3/60 tokens per second: one token after 20 s, not before.
        clock.now += 19.9
        refused = await client.post("/graphql", json=TYPENAME, headers=bearer(secret_key))
        assert (refused.status_code, refused.headers["retry-after"]) == (429, "1")
        clock.now += 0.1
        response = await client.post("/graphql", json=TYPENAME, headers=bearer(secret_key))
        assert response.status_code == 200
        refused = await client.post("/graphql", json=TYPENAME, headers=bearer(secret_key))
        assert (refused.status_code, refused.json()) == (429, rate_limited(20))


async def test_rate_limit_per_customer_across_its_tokens(
    settings: Settings, db: Database, gql: GraphQLClient
) -> None:
    from tests.test_auth_matrix import PLAN_A, new_customer, session, setup_model

    await setup_model(gql, PLAN_A)
    await new_customer(gql, "cust-1")
    await new_customer(gql, "cust-2")
    first, second = await session(gql, "cust-1"), await session(gql, "cust-1")
    other = await session(gql, "cust-2")
    query = {"query": "{ billing { customer { externalId } } }"}
    async with gateway_app(settings, gateway_rate_limit_per_minute=3) as (app, client):
        app.state.rate_limiter.clock = Clock()
        statuses = [
            (await client.post("/graphql", json=query, headers=bearer(token))).status_code
            for token in (first, second, first, second, other)
        ]
        assert statuses == [200, 200, 200, 429, 200]


async def test_rate_limit_of_anonymous_callers_per_address(
    settings: Settings, db: Database
) -> None:
    async with gateway_app(
        settings, gateway_rate_limit_per_minute=3, client_address=("10.0.0.1", 5000)
    ) as (app, client):
        limiter = app.state.rate_limiter
        limiter.clock = Clock()
        statuses = [(await client.post("/graphql", json=TYPENAME)).status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        # Failed authentications count against the address too: 401 until the bucket is empty.
        limiter.clock.now += 60  # full again
        statuses = [
            (await client.post("/graphql", json=TYPENAME, headers=bearer("sk_wrong"))).status_code
            for _ in range(4)
        ]
        assert statuses == [401, 401, 401, 429]
        # Another address is another caller.
        other = httpx.ASGITransport(app=app, client=("10.0.0.2", 5000))
        async with httpx.AsyncClient(transport=other, base_url="http://gateway.test") as second:
            assert (await second.post("/graphql", json=TYPENAME)).status_code == 200


async def test_rate_limit_zero_disables_it(settings: Settings, db: Database) -> None:
    async with gateway_app(settings, gateway_rate_limit_per_minute=0) as (_app, client):
        statuses = {(await client.post("/graphql", json=TYPENAME)).status_code for _ in range(30)}
        assert statuses == {200}


def test_rate_limiter_forgets_idle_callers() -> None:
    clock = Clock()
    limiter = RateLimiter(60, clock=clock, max_keys=2)
    assert limiter.hit("a") is None
    assert limiter.hit("b") is None
    clock.now += 1.0  # a and b have refilled (1 token per second)
    assert limiter.hit("c") is None  # the third key prunes the full buckets
    assert sorted(limiter._buckets) == ["c"]


# ------------------------------------------------------------------ body size


def body_of_size(size: int) -> bytes:
    base = json.dumps({"query": "{ __typename }"}).encode()
    padding = size - len(base)
    assert padding >= 0
    return json.dumps({"query": "{ __typename }" + " " * padding}).encode()


def too_large(limit: int) -> dict[str, Any]:
    return {
        "errors": [
            {
                "message": f"the request body is larger than {limit} bytes",
                "extensions": {"code": "PAYLOAD_TOO_LARGE", "maxBytes": limit},
            }
        ]
    }


async def test_body_limit_at_its_exact_threshold(settings: Settings, db: Database) -> None:
    async with gateway_app(settings, gateway_max_body_bytes=300) as (_app, client):
        exact = body_of_size(300)
        assert len(exact) == 300
        response = await client.post("/graphql", content=exact, headers=JSON_HEADERS)
        assert (response.status_code, response.json()) == (200, {"data": {"__typename": "Query"}})

        response = await client.post("/graphql", content=body_of_size(301), headers=JSON_HEADERS)
        assert (response.status_code, response.json()) == (413, too_large(300))
        assert response.headers["content-type"] == "application/json"

        async def chunks(body: bytes) -> AsyncIterator[bytes]:
            for start in range(0, len(body), 64):
                yield body[start : start + 64]

        # Without Content-Length (chunked): counted as it arrives.
        response = await client.post(
            "/graphql", content=chunks(body_of_size(300)), headers=JSON_HEADERS
        )
        assert response.status_code == 200
        assert "content-length" not in response.request.headers
        response = await client.post(
            "/graphql", content=chunks(body_of_size(301)), headers=JSON_HEADERS
        )
        assert (response.status_code, response.json()) == (413, too_large(300))

        response = await client.post(
            "/graphql",
            content=body_of_size(5000),
            headers={**JSON_HEADERS, "accept": GRAPHQL_RESPONSE_MEDIA},
        )
        assert (response.status_code, response.headers["content-type"]) == (
            413,
            GRAPHQL_RESPONSE_MEDIA,
        )


async def test_default_body_limit_is_wired(gql: GraphQLClient, settings: Settings) -> None:
    limit = settings.gateway_max_body_bytes
    response = await gql.http.post(
        "/graphql", content=body_of_size(limit + 1), headers=JSON_HEADERS
    )
    assert (response.status_code, response.json()) == (413, too_large(limit))


# ------------------------------------------------------------------ depth, aliases, tokens


def nested(depth: int) -> str:
    """A query with ``depth`` fields nested in each other around a leaf (the leaf's depth)."""
    chain = ["customers", "edges", "node"] + ["billing", "customer"] * 20
    inner = "__typename"
    for name in reversed(chain[:depth]):
        inner = f"{name} {{ {inner} }}"
    return "{ " + inner + " }"


def aliases(count: int, field: str = "__typename") -> str:
    return "{ " + " ".join(f"a{i}: {field}" for i in range(count)) + " }"


async def test_depth_limit_at_its_exact_threshold(
    settings: Settings, db: Database, secret_key: str
) -> None:
    async with gateway_app(settings, gateway_max_depth=5) as (_app, client):
        response = await client.post(
            "/graphql", json={"query": nested(5)}, headers=bearer(secret_key)
        )
        assert (response.status_code, response.json()) == (
            200,
            {"data": {"customers": {"edges": []}}},
        )
        response = await client.post(
            "/graphql", json={"query": nested(6)}, headers=bearer(secret_key)
        )
        body = response.json()
        assert response.status_code == 200
        assert body["data"] is None
        assert [(e["message"], e["extensions"]) for e in body["errors"]] == [
            (
                "'anonymous' exceeds maximum operation depth of 5",
                {"code": "GRAPHQL_VALIDATION_FAILED"},
            )
        ]


async def test_alias_limit_at_its_exact_threshold(
    settings: Settings, db: Database, secret_key: str
) -> None:
    async with gateway_app(settings, gateway_max_aliases=5) as (_app, client):
        response = await client.post(
            "/graphql", json={"query": aliases(5)}, headers=bearer(secret_key)
        )
        assert (response.status_code, response.json()) == (
            200,
            {"data": {f"a{i}": "Query" for i in range(5)}},
        )
        response = await client.post(
            "/graphql", json={"query": aliases(6)}, headers=bearer(secret_key)
        )
        assert (response.status_code, response.json()) == (
            200,
            {
                "data": None,
                "errors": [
                    {
                        "message": "6 aliases found. Allowed: 5",
                        "extensions": {"code": "GRAPHQL_VALIDATION_FAILED"},
                    }
                ],
            },
        )


async def test_a_dashboard_of_60_aliased_balances_fits_the_default_limits(
    gql: GraphQLClient, settings: Settings
) -> None:
    from tests.test_auth_matrix import PLAN_A, new_customer, setup_model, subscribe

    assert settings.gateway_max_aliases == 200
    await setup_model(gql, PLAN_A)
    for i in range(60):
        await new_customer(gql, f"dash-{i}")
    for i in range(60):
        await subscribe(gql, f"dash-{i}", "basic_a_monthly")
    query = (
        "{ "
        + " ".join(
            f'b{i}: usageBalance(meterSlug: "api_calls", customerExternalId: "dash-{i}")'
            " { availableBalance usedBalance }"
            for i in range(60)
        )
        + " }"
    )
    response = await gql(query)
    assert (response.status, response.body) == (
        200,
        {"data": {f"b{i}": {"availableBalance": 100, "usedBalance": 0} for i in range(60)}},
    )


async def test_token_limit_at_its_exact_threshold(
    settings: Settings, db: Database, secret_key: str
) -> None:
    # { a0: __typename ... a(n-1): __typename } has 3n + 2 tokens.
    async with gateway_app(settings, gateway_max_tokens=17, gateway_max_aliases=100) as (_, client):
        response = await client.post(
            "/graphql", json={"query": aliases(5)}, headers=bearer(secret_key)
        )
        assert response.status_code == 200
        assert response.json() == {"data": {f"a{i}": "Query" for i in range(5)}}
        response = await client.post(
            "/graphql", json={"query": aliases(5) + " "}, headers=bearer(secret_key)
        )
        assert response.status_code == 200
        response = await client.post(
            "/graphql",
            json={
                "query": "{ a0: __typename a1: __typename"
                " a2: __typename a3: __typename"
                " a4: __typename x }"
            },
            headers=bearer(secret_key),
        )
        body = response.json()
        assert response.status_code == 200
        assert body["data"] is None
        assert [e["extensions"] for e in body["errors"]] == [{"code": "GRAPHQL_PARSE_FAILED"}]
        assert body["errors"][0]["message"] == (
            "Syntax Error: Document contains more than 17 tokens. Parsing aborted."
        )


async def test_batch_size_cap_at_its_exact_threshold(
    settings: Settings, db: Database, secret_key: str, gql: GraphQLClient
) -> None:
    from tests.test_auth_matrix import PLAN_A, new_customer, setup_model, subscribe

    await setup_model(gql, PLAN_A)
    await new_customer(gql, "batcher")
    sub = await subscribe(gql, "batcher", "basic_a_monthly")
    document = """mutation($input: [CreateUsageEventInput!]!) { createUsageEvents(input: $input) {
        __typename ... on UserError { code message field } } }"""

    def batch(n: int, prefix: str) -> list[dict[str, Any]]:
        return [
            {
                "target": {"usageMeterSlug": "api_calls"},
                "subscriptionId": sub,
                "transactionId": f"{prefix}-{i}",
                "amount": 1,
            }
            for i in range(n)
        ]

    async with gateway_app(settings, gateway_max_batch_size=3) as (_app, client):
        response = await client.post(
            "/graphql",
            json={"query": document, "variables": {"input": batch(3, "ok")}},
            headers=bearer(secret_key),
        )
        assert response.json() == {
            "data": {"createUsageEvents": [{"__typename": "UsageEventRecorded"}] * 3}
        }
        response = await client.post(
            "/graphql",
            json={"query": document, "variables": {"input": batch(4, "no")}},
            headers=bearer(secret_key),
        )
        assert response.json() == {
            "data": {
                "createUsageEvents": [
                    {
                        "__typename": "InvalidInput",
                        "code": "INVALID_INPUT",
                        "message": "a batch holds at most 3 events (got 4)",
                        "field": ["input"],
                    }
                ]
                * 4
            }
        }
    assert await db.fetchval("SELECT count(*) FROM usage_events") == 3
    # The default cap (1,000) on the shared app.
    response = await gql(document, {"input": batch(1001, "big")})
    assert response.body["data"]["createUsageEvents"][1000] == {
        "__typename": "InvalidInput",
        "code": "INVALID_INPUT",
        "message": "a batch holds at most 1000 events (got 1001)",
        "field": ["input"],
    }
    assert len(response.body["data"]["createUsageEvents"]) == 1001
    assert await db.fetchval("SELECT count(*) FROM usage_events") == 3


# ------------------------------------------------------------------ negotiation and methods


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, "application/json"),
        ("", "application/json"),
        ("*/*", "application/json"),
        ("application/*", "application/json"),
        ("application/json", "application/json"),
        (GRAPHQL_RESPONSE_MEDIA, GRAPHQL_RESPONSE_MEDIA),
        (f"{GRAPHQL_RESPONSE_MEDIA}, application/json;q=0.9", GRAPHQL_RESPONSE_MEDIA),
        (f"application/json, {GRAPHQL_RESPONSE_MEDIA}", "application/json"),
        (f"application/json;q=0.5, {GRAPHQL_RESPONSE_MEDIA}", GRAPHQL_RESPONSE_MEDIA),
        (f"*/*, {GRAPHQL_RESPONSE_MEDIA};q=0.8", "application/json"),
        (f"*/*;q=0.8, {GRAPHQL_RESPONSE_MEDIA};q=0.8", GRAPHQL_RESPONSE_MEDIA),
        ("text/html,application/xhtml+xml,*/*;q=0.8", "application/json"),
        ("text/xml", None),
        ("application/json;q=0", None),
        ("application/json;q=nonsense", None),
    ],
)
def test_negotiate(accept: str | None, expected: str | None) -> None:
    assert negotiate(accept) == expected


async def test_the_response_has_the_media_type_the_client_asked_for(
    http: httpx.AsyncClient,
) -> None:
    for accept, media in (
        ("application/json", "application/json"),
        (GRAPHQL_RESPONSE_MEDIA, GRAPHQL_RESPONSE_MEDIA),
        (f"{GRAPHQL_RESPONSE_MEDIA}, application/json;q=0.9", GRAPHQL_RESPONSE_MEDIA),
    ):
        response = await http.post("/graphql", json=TYPENAME, headers={"accept": accept})
        assert (response.status_code, response.headers["content-type"], response.json()) == (
            200,
            media,
            {"data": {"__typename": "Query"}},
        )
        response = await http.get("/graphql", params=TYPENAME, headers={"accept": accept})
        assert (response.status_code, response.headers["content-type"]) == (200, media)
    response = await http.post("/graphql", json=TYPENAME, headers={"accept": "text/xml"})
    assert (response.status_code, response.headers["content-type"], response.json()) == (
        406,
        "application/json",
        {
            "errors": [
                {
                    "message": f"Accept must allow {GRAPHQL_RESPONSE_MEDIA} or application/json",
                    "extensions": {"code": "NOT_ACCEPTABLE"},
                }
            ]
        },
    )


@pytest.mark.parametrize(
    ("query", "variables", "code"),
    [
        ("{ __typename ", None, "GRAPHQL_PARSE_FAILED"),
        ("{ nope }", None, "GRAPHQL_VALIDATION_FAILED"),
        (
            "query($n: Int) { customers(first: $n) { pageInfo { hasNextPage } } }",
            {"n": "ten"},
            "BAD_USER_INPUT",
        ),
        (
            'mutation($d: DateTime) { grantUsageCredits(input: {subscriptionId: "x",'
            ' usageMeterSlug: "m", amount: 1, expiresAt: $d}) { __typename } }',
            {"d": "yesterday"},
            "BAD_USER_INPUT",
        ),
    ],
)
async def test_request_errors_are_200_for_json_and_400_for_graphql_response_json(
    query: str, variables: dict[str, Any] | None, code: str, gql: GraphQLClient
) -> None:
    body = {"query": query, "variables": variables}
    headers = {"authorization": f"Bearer {gql.token}"}
    legacy = await gql.http.post("/graphql", json=body, headers=headers)
    modern = await gql.http.post(
        "/graphql", json=body, headers={**headers, "accept": GRAPHQL_RESPONSE_MEDIA}
    )
    assert (legacy.status_code, modern.status_code) == (200, 400)
    # application/json keeps the legacy "data": null; graphql-response+json has no data entry
    assert legacy.json() == {"data": None, **modern.json()}
    assert list(modern.json()) == ["errors"]
    assert [e["extensions"]["code"] for e in legacy.json()["errors"]] == [code]


async def test_a_field_error_is_200_for_both_media_types(gql: GraphQLClient) -> None:
    body = {"query": "{ customers(first: 1000) { pageInfo { hasNextPage } } }"}
    for accept in ("application/json", GRAPHQL_RESPONSE_MEDIA):
        response = await gql.http.post(
            "/graphql",
            json=body,
            headers={"authorization": f"Bearer {gql.token}", "accept": accept},
        )
        assert (response.status_code, response.json()) == (
            200,
            {
                "data": None,
                "errors": [
                    {
                        "message": "first must be between 0 and 100",
                        "locations": [{"line": 1, "column": 3}],
                        "path": ["customers"],
                        "extensions": {"code": "BAD_USER_INPUT"},
                    }
                ],
            },
        )


async def test_get_serves_queries_and_refuses_mutations(gql: GraphQLClient, db: Database) -> None:
    headers = {"authorization": f"Bearer {gql.token}"}
    response = await gql.http.get("/graphql", params=TYPENAME, headers=headers)
    assert (response.status_code, response.json()) == (200, {"data": {"__typename": "Query"}})
    response = await gql.http.get(
        "/graphql",
        params={
            "query": 'mutation { createCustomer(input: {externalId: "via-get"}) { __typename } }'
        },
        headers=headers,
    )
    assert (response.status_code, response.headers["allow"], response.json()) == (
        405,
        "POST",
        {
            "errors": [
                {
                    "message": "mutations are not allowed when using GET: GET serves queries only,"
                    " use POST",
                    "extensions": {"code": "METHOD_NOT_ALLOWED"},
                }
            ]
        },
    )
    assert await db.fetchval("SELECT count(*) FROM customers") == 0


@pytest.mark.parametrize(
    ("content", "content_type", "status", "message"),
    [
        (b"{not json", "application/json", 400, "Unable to parse request body as JSON"),
        (b"", "application/json", 400, "Unable to parse request body as JSON"),
        (
            b"[" * 5000 + b"]" * 5000,
            "application/json",
            400,
            "Unable to parse request body as JSON",
        ),
        (b'"a string"', "application/json", 400, "the request body must be a JSON object"),
        (b"42", "application/json", 400, "the request body must be a JSON object"),
        (b"[]", "application/json", 400, "Batching is not enabled"),
        (
            b'{"query": 5}',
            "application/json",
            400,
            "The GraphQL operation's `query` must be a string or null, if provided.",
        ),
        (
            b'{"query": "{ __typename }", "variables": [1]}',
            "application/json",
            400,
            "The GraphQL operation's `variables` must be an object or null, if provided.",
        ),
        (
            b'{"query": "{ __typename }", "operationName": 5}',
            "application/json",
            400,
            "operationName must be a string or null",
        ),
        (b"{}", "application/json", 400, "No GraphQL query found in the request"),
        (
            b'{"query": "{ __typename }"}',
            "text/plain",
            415,
            "POST a body of Content-Type application/json",
        ),
        (
            b"query=%7B__typename%7D",
            "application/x-www-form-urlencoded",
            415,
            "POST a body of Content-Type application/json",
        ),
    ],
)
async def test_unparseable_requests_get_json_errors(
    content: bytes, content_type: str, status: int, message: str, gql: GraphQLClient
) -> None:
    response = await gql.http.post(
        "/graphql",
        content=content,
        headers={"content-type": content_type, "authorization": f"Bearer {gql.token}"},
    )
    code = {400: "BAD_REQUEST", 415: "UNSUPPORTED_MEDIA_TYPE"}[status]
    assert (response.status_code, response.headers["content-type"], response.json()) == (
        status,
        "application/json",
        {"errors": [{"message": message, "extensions": {"code": code}}]},
    )


async def test_every_failure_has_a_json_body(http: httpx.AsyncClient) -> None:
    response = await http.put("/graphql", json=TYPENAME)
    assert (response.status_code, response.json()) == (
        405,
        {
            "errors": [
                {"message": "Method Not Allowed", "extensions": {"code": "METHOD_NOT_ALLOWED"}}
            ]
        },
    )
    response = await http.get("/nowhere")
    assert (response.status_code, response.json()) == (
        404,
        {"errors": [{"message": "Not Found", "extensions": {"code": "NOT_FOUND"}}]},
    )
    response = await http.get("/graphql", headers={"accept": "application/json"})
    assert (response.status_code, response.json()) == (
        400,
        {
            "errors": [
                {
                    "message": "No GraphQL query found in the request",
                    "extensions": {"code": "BAD_REQUEST"},
                }
            ]
        },
    )
    response = await http.get("/graphql", params={"query": "{ __typename }", "variables": "{"})
    assert (response.status_code, response.json()) == (
        400,
        {
            "errors": [
                {
                    "message": "Unable to parse request body as JSON",
                    "extensions": {"code": "BAD_REQUEST"},
                }
            ]
        },
    )
    response = await http.post("/graphql", json=TYPENAME, headers={"authorization": "Basic abc"})
    assert (response.status_code, response.headers["www-authenticate"], response.json()) == (
        401,
        "Bearer",
        {
            "data": None,
            "errors": [
                {
                    "message": "use Authorization: Bearer <secret key or session token>",
                    "extensions": {"code": "UNAUTHENTICATED"},
                }
            ],
        },
    )


# ------------------------------------------------------------------ GraphiQL and introspection


INTROSPECTION = {"query": "{ __schema { queryType { name } } }"}
BROWSER = {"accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}


async def test_graphiql_and_introspection_need_no_credentials(http: httpx.AsyncClient) -> None:
    page = await http.get("/graphql", headers=BROWSER)
    assert (page.status_code, page.headers["content-type"]) == (200, "text/html; charset=utf-8")
    response = await http.post("/graphql", json=INTROSPECTION)
    assert (response.status_code, response.json()) == (
        200,
        {"data": {"__schema": {"queryType": {"name": "Query"}}}},
    )


async def test_introspection_and_graphiql_can_be_turned_off(
    settings: Settings, db: Database, secret_key: str
) -> None:
    async with gateway_app(settings, gateway_introspection=False, gateway_graphiql=False) as (
        _app,
        client,
    ):
        page = await client.get("/graphql", headers=BROWSER)
        assert (page.status_code, page.json()) == (
            404,
            {"errors": [{"message": "Not Found", "extensions": {"code": "NOT_FOUND"}}]},
        )
        response = await client.post("/graphql", json=INTROSPECTION)
        assert (response.status_code, response.json()["errors"][0]["extensions"]) == (
            401,
            {"code": "UNAUTHENTICATED"},
        )
        response = await client.post("/graphql", json=INTROSPECTION, headers=bearer(secret_key))
        assert (response.status_code, response.json()) == (
            200,
            {
                "data": None,
                "errors": [
                    {
                        "message": "GraphQL introspection has been disabled, but the requested query"
                        " contained the field '__schema'.",
                        "locations": [{"line": 1, "column": 3}],
                        "extensions": {"code": "GRAPHQL_VALIDATION_FAILED"},
                    },
                    {
                        "message": "GraphQL introspection has been disabled, but the requested query"
                        " contained the field 'queryType'.",
                        "locations": [{"line": 1, "column": 14}],
                        "extensions": {"code": "GRAPHQL_VALIDATION_FAILED"},
                    },
                ],
            },
        )
        response = await client.post("/graphql", json=TYPENAME)
        assert (response.status_code, response.json()) == (200, {"data": {"__typename": "Query"}})


@pytest.mark.parametrize(
    "query",
    [
        "{ billing { customer { id } } }",
        "{ __schema { queryType { name } } billing { customer { id } } }",
        "{ ...F } fragment F on Query { customers { edges { cursor } } }",
        '{ ... on Query { usageBalance(meterSlug: "x") { usedBalance } } }',
        "{ billing { nope } }",  # refused before validation says anything about the schema
        'mutation { createCustomer(input: {externalId: "anon"}) { __typename } }',
        'query A { __typename } mutation B { createCustomer(input: {externalId: "anon"}) '
        "{ __typename } }",
    ],
)
async def test_anonymous_operations_are_refused_before_execution(
    query: str, http: httpx.AsyncClient, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran: list[str] = []
    real = authz.customer_for

    async def spy(*args: Any) -> Any:
        ran.append("customer_for")
        return await real(*args)

    monkeypatch.setattr(authz, "customer_for", spy)
    response = await http.post(
        "/graphql", json={"query": query, "operationName": "B" if "mutation B" in query else None}
    )
    assert (response.status_code, response.headers["www-authenticate"], response.json()) == (
        401,
        "Bearer",
        {
            "data": None,
            "errors": [
                {
                    "message": "authentication required: send Authorization: Bearer"
                    " <secret key or session token>",
                    "extensions": {"code": "UNAUTHENTICATED"},
                }
            ],
        },
    )
    assert ran == []
    assert await db.fetchval("SELECT count(*) FROM customers") == 0


# ------------------------------------------------------------------ masking and logging


async def test_an_unexpected_error_is_masked_with_an_id_in_the_log(
    gql: GraphQLClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(*_args: Any) -> Any:
        raise RuntimeError('relation "secret_table" does not exist: SELECT * FROM secret_table')

    monkeypatch.setattr(customers, "customers_page", broken)
    with caplog.at_level(logging.DEBUG):
        response = await gql("{ customers { edges { cursor } } }")
    errors = response.errors
    assert errors is not None and len(errors) == 1
    error_id = errors[0]["extensions"]["errorId"]
    assert (response.status, response.body) == (
        200,
        {
            "data": None,
            "errors": [
                {
                    "message": f"Internal server error (error id {error_id})",
                    "locations": [{"line": 1, "column": 3}],
                    "path": ["customers"],
                    "extensions": {"code": "INTERNAL_SERVER_ERROR", "errorId": error_id},
                }
            ],
        },
    )
    assert len(error_id) == 32
    assert "secret_table" not in json.dumps(response.body)
    logged = [r for r in caplog.records if getattr(r, "error_id", None) == error_id]
    assert [(r.name, r.levelname) for r in logged] == [("gateway.errors", "ERROR")]
    assert logged[0].exc_info is not None and "secret_table" in str(logged[0].exc_info[1])
    # Logged once, by the gateway: strawberry's own logger wrote nothing.
    assert [r for r in caplog.records if r.name.startswith("strawberry")] == []


async def test_an_error_in_an_extension_hook_is_masked_too(
    http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*_args: Any) -> Any:
        raise KeyError("internal detail")

    monkeypatch.setattr(authz, "root_fields", broken)
    with caplog.at_level(logging.DEBUG):
        response = await http.post("/graphql", json=TYPENAME)
    body = response.json()
    error_id = body["errors"][0]["extensions"]["errorId"]
    assert (response.status_code, body) == (
        200,
        {
            "data": None,
            "errors": [
                {
                    "message": f"Internal server error (error id {error_id})",
                    "extensions": {"code": "INTERNAL_SERVER_ERROR", "errorId": error_id},
                }
            ],
        },
    )
    assert [r.name for r in caplog.records if getattr(r, "error_id", None) == error_id] == [
        "gateway.errors"
    ]


async def test_an_unexpected_http_error_is_a_masked_json_500(
    app: FastAPI,
    db: Database,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken(*_args: Any) -> Any:
        raise OSError("connection to 10.1.2.3:5432 refused")

    monkeypatch.setattr(gateway.api.app, "authenticate", broken)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as client:
        with caplog.at_level(logging.ERROR):
            response = await client.post("/graphql", json=TYPENAME)
    body = response.json()
    error_id = body["errors"][0]["extensions"]["errorId"]
    assert (response.status_code, body) == (
        500,
        {
            "errors": [
                {
                    "message": f"Internal server error (error id {error_id})",
                    "extensions": {"code": "INTERNAL_SERVER_ERROR", "errorId": error_id},
                }
            ]
        },
    )
    assert "10.1.2.3" not in response.text
    assert [r.name for r in caplog.records if getattr(r, "error_id", None) == error_id] == [
        "gateway.api.http"
    ]


async def test_expected_errors_are_not_logged_as_stack_traces(
    gql: GraphQLClient, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.test_auth_matrix import PLAN_A, new_customer, session, setup_model

    await setup_model(gql, PLAN_A)
    await new_customer(gql, "quiet")
    token = await session(gql, "quiet")
    with caplog.at_level(logging.DEBUG):
        codes = []
        for query, variables, bearer_token in (
            ("{ billing { customer { id } } }", None, None),  # UNAUTHENTICATED
            ("{ customers { edges { cursor } } }", None, token),  # FORBIDDEN
            ("{ customers(first: 1000) { edges { cursor } } }", None, "default"),  # resolver
            (
                "query($n: Int) { customers(first: $n) { edges { cursor } } }",
                {"n": "x"},
                "default",
            ),  # variables
            ("{ nope }", None, "default"),  # validation
            ("{ nope", None, "default"),  # parse
        ):
            response = await gql(query, variables, token=bearer_token)
            codes.append((response.errors or [{}])[0]["extensions"]["code"])
    assert codes == [
        "UNAUTHENTICATED",
        "FORBIDDEN",
        "BAD_USER_INPUT",
        "BAD_USER_INPUT",
        "GRAPHQL_VALIDATION_FAILED",
        "GRAPHQL_PARSE_FAILED",
    ]
    assert [r for r in caplog.records if r.exc_info or r.levelno >= logging.WARNING] == []


def test_the_http_module_documents_the_per_process_rate_limit() -> None:
    import gateway.api.http

    doc = gateway.api.http.__doc__ or ""
    assert "effective limit is N x the setting" in " ".join(doc.split())
    assert Path(gateway.api.http.__file__).name == "http.py"


async def test_customer_sessions_are_keyed_by_customer(settings: Settings) -> None:
    from starlette.requests import Request

    from gateway.callers.auth import ANONYMOUS, Caller

    request = Request({"type": "http", "client": ("192.0.2.7", 1), "headers": []})
    customer = uuid.uuid4()
    key = uuid.uuid4()
    assert RateLimiter.key(Caller(kind="customer", customer_id=customer), request) == (
        f"customer:{customer}"
    )
    assert RateLimiter.key(Caller(kind="secret_key", key_id=key), request) == f"key:{key}"
    assert RateLimiter.key(ANONYMOUS, request) == "ip:192.0.2.7"
    assert RateLimiter.key(None, request) == "ip:192.0.2.7"


def repeated(kind: str, n: int) -> str:
    """A query selecting one response name ``n`` times in its root selection set."""
    if kind == "fields":
        return "{ " + "__typename " * n + "}"
    if kind == "fields with arguments":
        return "{ " + 'billing(customerExternalId: "x") { customer { id } } ' * n + "}"
    if kind == "inline fragments":
        return "{ " + "... on Query { billing { customer { id } } } " * n + "}"
    spreads = " ".join(f"...F{i}" for i in range(n))
    fragments = " ".join(
        f"fragment F{i} on Query {{ billing {{ customer {{ id }} }} }}" for i in range(n)
    )
    return "{ " + spreads + " } " + fragments


@pytest.mark.parametrize(
    ("kind", "name"),
    [
        ("fields", "__typename"),
        ("fields with arguments", "billing"),
        ("inline fragments", "billing"),
        ("fragment spreads", "billing"),
    ],
)
async def test_repeated_selections_are_refused_before_validation(
    kind: str, name: str, gql: GraphQLClient
) -> None:
    """graphql-core compares repeated selections pairwise: 17 copies are refused, 16 are not."""
    response = await gql(repeated(kind, 16))
    assert response.status == 200
    assert "errors" not in response.body, response.body
    response = await gql(repeated(kind, 17))
    assert (response.status, response.body) == (
        200,
        {
            "data": None,
            "errors": [
                {
                    "message": f"'{name}' is selected 17 times in one selection set; at most 16"
                    " (use aliases for distinct lookups)",
                    "extensions": {"code": "GRAPHQL_VALIDATION_FAILED"},
                }
            ],
        },
    )
    # Aliases make distinct lookups: 17 of them are fine.
    aliased = (
        "{ "
        + " ".join(
            f'b{i}: billing(customerExternalId: "x") {{ customer {{ id }} }}' for i in range(17)
        )
        + " }"
    )
    response = await gql(aliased)
    assert (response.status, response.body) == (200, {"data": {f"b{i}": None for i in range(17)}})


def test_the_websocket_endpoint_speaks_graphql_transport_ws_only(settings: Settings) -> None:
    # Subscriptions: tests/test_live.py. The legacy subscriptions-transport-ws protocol
    # ("graphql-ws") is refused at the handshake.
    import warnings

    from starlette.websockets import WebSocketDisconnect

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # starlette's note about its test client's httpx
        from starlette.testclient import TestClient

    with TestClient(create_app(settings, settings.database_url or "")) as client:
        with client.websocket_connect(
            "/graphql", subprotocols=["graphql-transport-ws"]
        ) as accepted:
            assert accepted.accepted_subprotocol == "graphql-transport-ws"
        with client.websocket_connect("/graphql", subprotocols=["graphql-ws"]) as refused:
            with pytest.raises(WebSocketDisconnect) as closed:
                refused.receive_text()
            assert (closed.value.code, closed.value.reason) == (4406, "Subprotocol not acceptable")


async def test_fragment_cycles_and_unknown_fragments_are_validation_errors(
    gql: GraphQLClient,
) -> None:
    cycle = await gql("{ ...F } fragment F on Query { ...G } fragment G on Query { ...F }")
    assert (cycle.status, [e["extensions"]["code"] for e in cycle.errors or []]) == (
        200,
        ["GRAPHQL_VALIDATION_FAILED"],
    )
    assert cycle.errors is not None
    assert cycle.errors[0]["message"] == "Cannot spread fragment 'F' within itself via 'G'."
    unknown = await gql("{ ...Missing }")
    assert (unknown.status, unknown.body) == (
        200,
        {
            "data": None,
            "errors": [
                {
                    "message": "Unknown fragment 'Missing'.",
                    "locations": [{"line": 1, "column": 6}],
                    "extensions": {"code": "GRAPHQL_VALIDATION_FAILED"},
                }
            ],
        },
    )


async def test_the_validation_cache_is_used(gql: GraphQLClient) -> None:
    """One validation per distinct document: the limits reuse their rule classes, and the
    repeats are answered by the text-keyed cache (BoundedValidationCache) before strawberry's,
    which is neither hit nor missed again."""
    from strawberry.extensions.validation_cache import _get_validate_cache

    cache = _get_validate_cache(1024)
    document = "{ validationCacheProbe: customers(first: 3) { edges { cursor } } }"
    start = cache.cache_info()
    assert (await gql(document)).status == 200
    before = cache.cache_info()
    assert before.misses - start.misses == 1  # validated once
    for _ in range(3):
        assert (await gql(document)).status == 200
    after = cache.cache_info()
    assert (after.hits - before.hits, after.misses - before.misses) == (0, 0)
