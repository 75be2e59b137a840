"""Production mode: weak or placeholder secrets are refused, and GraphiQL, introspection and
field suggestions are off unless a setting turns them on. FastAPI's /docs, /redoc and
/openapi.json are off in every mode."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from gateway.settings import Settings
from gateway.storage.db import Database
from tests.servers import free_port
from tests.test_http import BROWSER, INTROSPECTION, TYPENAME, bearer, gateway_app

ROOT = Path(__file__).parent.parent
GOOD_SECRET = "kQ3v-9Zr_T1mXw8bLp2YcN6dHs4uJf0aEg7iRo5tVy"  # 42 characters, 42 distinct
URL = "postgresql://gateway@db/billing"


def _example_values() -> list[str]:
    values = []
    for name in ("gateway.env.example", "postgres.env.example"):
        for line in (ROOT / name).read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                values.append(line.partition("=")[2])
    return values


def production(**overrides: Any) -> Settings:
    return Settings(gateway_env="production", database_url=URL, **overrides)


# ------------------------------------------------------------------ the token secret


def test_production_refuses_every_value_of_the_example_files() -> None:
    values = _example_values()
    assert "change-me-to-a-long-random-secret-of-at-least-32-characters" in values
    for value in values:
        with pytest.raises(ValidationError, match="GATEWAY_TOKEN_SECRET") as refused:
            production(gateway_token_secret=value)
        message = str(refused.value)
        assert (
            "is a placeholder, not a secret" in message
            or "must be set (at least 32 characters)" in message
        ), value


def test_production_names_the_placeholder_and_how_to_generate_a_secret() -> None:
    with pytest.raises(ValidationError) as refused:
        production(
            gateway_token_secret="change-me-to-a-long-random-secret-of-at-least-32-characters"
        )
    (error,) = refused.value.errors()
    assert error["msg"] == (
        "Value error, GATEWAY_TOKEN_SECRET is a placeholder, not a secret: generate one with:"
        ' python -c "import secrets; print(secrets.token_urlsafe(48))"'
    )


@pytest.mark.parametrize(
    ("secret", "distinct", "bits"),
    [
        ("x" * 32, 1, "0.0"),
        ("s" * 40, 1, "0.0"),
        ("ab" * 20, 2, "1.0"),
        ("test-secret-" + "x" * 32, 7, "1.5"),  # the test suite's development secret
        ("aaaabbbbccccddddeeeeffffgggghhhh", 8, "3.0"),
        ("a" * 30 + "bcdefghijk", 11, "1.6"),  # enough distinct characters, mostly one
    ],
)
def test_production_refuses_low_entropy_secrets(secret: str, distinct: int, bits: str) -> None:
    with pytest.raises(ValidationError) as refused:
        production(gateway_token_secret=secret)
    (error,) = refused.value.errors()
    assert error["msg"] == (
        f"Value error, GATEWAY_TOKEN_SECRET is not random enough ({distinct} distinct characters,"
        f" {bits} bits per character; at least 10 and 3.0 are required): generate one with:"
        ' python -c "import secrets; print(secrets.token_urlsafe(48))"'
    )


@pytest.mark.parametrize(
    "secret",
    [GOOD_SECRET, secrets.token_urlsafe(48), secrets.token_hex(32), secrets.token_urlsafe(24)],
)
def test_production_accepts_random_secrets(secret: str) -> None:
    assert production(gateway_token_secret=secret).token_secret() == secret


def test_development_accepts_any_secret(tmp_path: Path) -> None:
    for secret in ("test-secret-" + "x" * 32, "x" * 32, _example_values()[0]):
        settings = Settings(gateway_data_dir=tmp_path, gateway_token_secret=secret)
        assert settings.token_secret() == secret


# ------------------------------------------------------------------ defaults by mode


def test_graphiql_introspection_and_suggestions_default_by_mode() -> None:
    development = Settings(database_url=URL)
    assert (development.graphiql, development.introspection, development.field_suggestions) == (
        True,
        True,
        True,
    )
    prod = production(gateway_token_secret=GOOD_SECRET)
    assert (prod.graphiql, prod.introspection, prod.field_suggestions) == (False, False, False)
    opened = production(
        gateway_token_secret=GOOD_SECRET,
        gateway_graphiql=True,
        gateway_introspection=True,
        gateway_field_suggestions=True,
    )
    assert (opened.graphiql, opened.introspection, opened.field_suggestions) == (True, True, True)
    closed = Settings(
        database_url=URL,
        gateway_graphiql=False,
        gateway_introspection=False,
        gateway_field_suggestions=False,
    )
    assert (closed.graphiql, closed.introspection, closed.field_suggestions) == (
        False,
        False,
        False,
    )


def test_the_environment_turns_them_on_in_production(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "GATEWAY_ENV": "production",
        "DATABASE_URL": URL,
        "GATEWAY_TOKEN_SECRET": GOOD_SECRET,
        "GATEWAY_GRAPHIQL": "true",
        "GATEWAY_INTROSPECTION": "true",
        "GATEWAY_FIELD_SUGGESTIONS": "true",
    }.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert (settings.graphiql, settings.introspection, settings.field_suggestions) == (
        True,
        True,
        True,
    )


# ------------------------------------------------------------------ the production app

TYPO = {"query": "{ customer { id } }"}  # the field is `customers`
# A variable of an input type with a misspelt field (`amout`), on the compiled path
# (createUsageEvent) and on graphql-core's (createCustomer).
EVENT_TYPO = {
    "query": "mutation($i: CreateUsageEventInput!) { createUsageEvent(input: $i) { __typename } }",
    "variables": {
        "i": {
            "target": {"usageMeterSlug": "m"},
            "subscriptionId": "s",
            "amout": 1,
            "transactionId": "t",
        }
    },
}
CUSTOMER_TYPO = {
    "query": "mutation($i: CreateCustomerInput!) { createCustomer(input: $i) { __typename } }",
    "variables": {"i": {"externalId": "c-1", "nme": "x"}},
}

EVENT_TYPO_ERROR = (
    "Variable '$i' has invalid value: Expected value of type 'CreateUsageEventInput' not to"
    " include unknown field 'amout'{found}: {{'target': {{'usageMeterSlug': 'm'}},"
    " 'subscriptionId': 's', 'amout': 1, 'transactionId': 't'}}."
)
CUSTOMER_TYPO_ERROR = (
    "Variable '$i' has invalid value: Expected value of type 'CreateCustomerInput' not to"
    " include unknown field 'nme'{found}: {{'externalId': 'c-1', 'nme': 'x'}}."
)


async def _customers(db: Database) -> int:
    return int(await db.fetchval("SELECT count(*) FROM customers"))


@pytest.fixture
async def prod_client(settings: Settings, db: Database) -> Any:
    async with gateway_app(
        settings, gateway_env="production", gateway_token_secret=GOOD_SECRET
    ) as (
        _app,
        client,
    ):
        yield client


async def test_production_serves_no_graphiql(prod_client: httpx.AsyncClient) -> None:
    page = await prod_client.get("/graphql", headers=BROWSER)
    assert (page.status_code, page.json()) == (
        404,
        {"errors": [{"message": "Not Found", "extensions": {"code": "NOT_FOUND"}}]},
    )
    assert "GraphiQL" not in page.text
    script = await prod_client.get("/static/graphiql/graphiql.min.js")
    assert script.status_code == 404
    # GET queries still work: only the page is gone.
    response = await prod_client.get("/graphql", params={"query": "{ __typename }"})
    assert (response.status_code, response.json()) == (200, {"data": {"__typename": "Query"}})


async def test_production_refuses_introspection(
    prod_client: httpx.AsyncClient, secret_key: str
) -> None:
    anonymous = await prod_client.post("/graphql", json=INTROSPECTION)
    assert anonymous.status_code == 401
    assert anonymous.json() == {
        "data": None,
        "errors": [
            {
                "message": "authentication required: send Authorization: Bearer"
                " <secret key or session token>",
                "extensions": {"code": "UNAUTHENTICATED"},
            }
        ],
    }
    keyed = await prod_client.post("/graphql", json=INTROSPECTION, headers=bearer(secret_key))
    assert (keyed.status_code, keyed.json()) == (
        200,
        {
            "data": None,
            "errors": [
                {
                    "message": "GraphQL introspection has been disabled, but the requested query"
                    f" contained the field '{field}'.",
                    "locations": [{"line": 1, "column": column}],
                    "extensions": {"code": "GRAPHQL_VALIDATION_FAILED"},
                }
                for field, column in (("__schema", 3), ("queryType", 14))
            ],
        },
    )
    typename = await prod_client.post("/graphql", json=TYPENAME)
    assert (typename.status_code, typename.json()) == (200, {"data": {"__typename": "Query"}})


async def test_production_suggests_no_field_names(
    prod_client: httpx.AsyncClient, secret_key: str, db: Database
) -> None:
    response = await prod_client.post("/graphql", json=TYPO, headers=bearer(secret_key))
    assert (response.status_code, response.json()) == (
        200,
        {
            "data": None,
            "errors": [
                {
                    "message": "Cannot query field 'customer' on type 'Query'.",
                    "locations": [{"line": 1, "column": 3}],
                    "extensions": {"code": "GRAPHQL_VALIDATION_FAILED"},
                }
            ],
        },
    )
    for body, message in (
        (EVENT_TYPO, EVENT_TYPO_ERROR),
        (CUSTOMER_TYPO, CUSTOMER_TYPO_ERROR),
    ):
        response = await prod_client.post("/graphql", json=body, headers=bearer(secret_key))
        assert (response.status_code, response.json()) == (
            200,
            {
                "data": None,
                "errors": [
                    {
                        "message": message.format(found=", found"),
                        "locations": [{"line": 1, "column": 10}],
                        "extensions": {"code": "BAD_USER_INPUT"},
                    }
                ],
            },
        )
    assert await _customers(db) == 0


async def test_development_suggests_field_names(gql: Any, db: Database) -> None:
    """The counterpart: what production leaves out."""
    response = await gql(TYPO["query"])
    assert response.errors == [
        {
            "message": "Cannot query field 'customer' on type 'Query'. Did you mean 'customers'?",
            "locations": [{"line": 1, "column": 3}],
            "extensions": {"code": "GRAPHQL_VALIDATION_FAILED"},
        }
    ]
    for body, message, found in (
        (EVENT_TYPO, EVENT_TYPO_ERROR, ". Did you mean 'amount'? Found"),
        (CUSTOMER_TYPO, CUSTOMER_TYPO_ERROR, ". Did you mean 'name'? Found"),
    ):
        response = await gql(body["query"], body["variables"])
        assert response.errors == [
            {
                "message": message.format(found=found),
                "locations": [{"line": 1, "column": 10}],
                "extensions": {"code": "BAD_USER_INPUT"},
            }
        ]
    assert await _customers(db) == 0


async def test_production_settings_turn_them_back_on(
    settings: Settings, db: Database, secret_key: str
) -> None:
    async with gateway_app(
        settings,
        gateway_env="production",
        gateway_token_secret=GOOD_SECRET,
        gateway_graphiql=True,
        gateway_introspection=True,
        gateway_field_suggestions=True,
    ) as (_app, client):
        page = await client.get("/graphql", headers=BROWSER)
        assert (page.status_code, page.headers["content-type"]) == (
            200,
            "text/html; charset=utf-8",
        )
        response = await client.post("/graphql", json=INTROSPECTION)
        assert (response.status_code, response.json()) == (
            200,
            {"data": {"__schema": {"queryType": {"name": "Query"}}}},
        )
        response = await client.post("/graphql", json=TYPO, headers=bearer(secret_key))
        assert response.json()["errors"][0]["message"] == (
            "Cannot query field 'customer' on type 'Query'. Did you mean 'customers'?"
        )


@pytest.mark.parametrize("path", ["/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"])
async def test_no_fastapi_docs_in_any_mode(
    http: httpx.AsyncClient, prod_client: httpx.AsyncClient, path: str
) -> None:
    for client in (http, prod_client):
        response = await client.get(path, headers=BROWSER)
        assert (response.status_code, response.json()) == (
            404,
            {"errors": [{"message": "Not Found", "extensions": {"code": "NOT_FOUND"}}]},
        )


# ------------------------------------------------------------------ real processes


def _production_env(database_url: str, secret: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_") and k != "DATABASE_URL"
    }
    return {
        **env,
        "GATEWAY_ENV": "production",
        "DATABASE_URL": database_url,
        "GATEWAY_TOKEN_SECRET": secret,
    }


def test_serve_refuses_the_placeholder_without_echoing_it(database_url: str) -> None:
    placeholder = "change-me-to-a-long-random-secret-of-at-least-32-characters"
    proc = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "serve", "--port", str(free_port())],
        env=_production_env(database_url, placeholder),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (proc.returncode, proc.stdout, proc.stderr) == (
        2,
        "",
        "configuration error: GATEWAY_TOKEN_SECRET is a placeholder, not a secret: generate"
        ' one with: python -c "import secrets; print(secrets.token_urlsafe(48))"\n',
    )
    assert placeholder not in proc.stderr and database_url not in proc.stderr


def test_serve_in_production_serves_graphql_only(database_url: str) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--port", str(port)],
        env=_production_env(database_url, GOOD_SECRET),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(base + "/healthz", timeout=2).raise_for_status()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.fail("the gateway did not start")
                time.sleep(0.2)
        page = httpx.get(base + "/graphql", headers=BROWSER, timeout=5)
        assert (page.status_code, "GraphiQL" in page.text) == (404, False)
        for path in ("/docs", "/openapi.json", "/static/graphiql/graphiql.min.js"):
            assert httpx.get(base + path, timeout=5).status_code == 404, path
        introspection = httpx.post(base + "/graphql", json=INTROSPECTION, timeout=5)
        assert (introspection.status_code, introspection.json()["errors"][0]["extensions"]) == (
            401,
            {"code": "UNAUTHENTICATED"},
        )
        typename = httpx.post(base + "/graphql", json=TYPENAME, timeout=5)
        assert typename.json() == {"data": {"__typename": "Query"}}
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, output
    messages = [json.loads(line)["message"] for line in output.splitlines()]
    assert f"GraphQL: http://127.0.0.1:{port}/graphql" in messages
    assert "GraphiQL" not in output
