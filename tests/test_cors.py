"""CORS (GATEWAY_CORS_ORIGINS): a page on another origin may call /graphql with a bearer token.

Preflights are answered with the allowed methods and headers; an actual request from an
allowed origin carries Access-Control-Allow-Origin; another origin gets no CORS header at all
(so the browser refuses to hand the answer to its page); production refuses ``*``.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from gateway.settings import Settings
from tests.servers import free_port
from tests.test_http import JSON_HEADERS, TYPENAME, gateway_app
from tests.test_production import GOOD_SECRET, _production_env

ALLOWED = "https://app.example.com"
OTHER = "https://evil.example.net"
PREFLIGHT = {
    "access-control-request-method": "POST",
    "access-control-request-headers": "authorization, content-type",
}


def cors_headers(headers: object) -> dict[str, str]:
    return {
        k: v
        for k, v in dict(headers).items()  # type: ignore[call-overload]
        if k.lower().startswith("access-control-")
    }


async def test_preflight_from_an_allowed_origin_is_answered(settings: Settings) -> None:
    async with gateway_app(settings, gateway_cors_origins=f"{ALLOWED}, http://localhost:5173") as (
        _app,
        client,
    ):
        response = await client.options("/graphql", headers={"origin": ALLOWED, **PREFLIGHT})
    assert response.status_code == 200
    assert cors_headers(response.headers) == {
        "access-control-allow-origin": ALLOWED,
        "access-control-allow-methods": "GET, POST, OPTIONS",
        "access-control-allow-headers": "Accept, Accept-Language, Authorization,"
        " Content-Language, Content-Type",
        "access-control-max-age": "600",
    }


async def test_actual_request_from_an_allowed_origin_is_readable(settings: Settings) -> None:
    async with gateway_app(settings, gateway_cors_origins=ALLOWED) as (_app, client):
        response = await client.post(
            "/graphql", json=TYPENAME, headers={"origin": ALLOWED, **JSON_HEADERS}
        )
    assert (response.status_code, response.json()) == (200, {"data": {"__typename": "Query"}})
    assert cors_headers(response.headers) == {
        "access-control-allow-origin": ALLOWED,
        "access-control-expose-headers": "Retry-After, X-Request-Id",
    }
    assert "access-control-allow-credentials" not in response.headers


async def test_another_origin_gets_no_cors_headers(settings: Settings) -> None:
    async with gateway_app(settings, gateway_cors_origins=ALLOWED) as (_app, client):
        preflight = await client.options("/graphql", headers={"origin": OTHER, **PREFLIGHT})
        actual = await client.post(
            "/graphql", json=TYPENAME, headers={"origin": OTHER, **JSON_HEADERS}
        )
    # Starlette answers a refused preflight 400 with its fixed method and header lists but
    # no Access-Control-Allow-Origin: the browser refuses the actual request.
    assert (preflight.status_code, preflight.text) == (400, "Disallowed CORS origin")
    assert "access-control-allow-origin" not in preflight.headers
    # Only the (harmless) expose list, which Starlette adds to every answer: without
    # Access-Control-Allow-Origin the browser hands the page nothing.
    assert cors_headers(actual.headers) == {
        "access-control-expose-headers": "Retry-After, X-Request-Id"
    }


async def test_without_the_setting_there_are_no_cors_headers(settings: Settings) -> None:
    async with gateway_app(settings, gateway_cors_origins=None) as (_app, client):
        actual = await client.post(
            "/graphql", json=TYPENAME, headers={"origin": ALLOWED, **JSON_HEADERS}
        )
    assert cors_headers(actual.headers) == {}


async def test_star_allows_any_origin_in_development(settings: Settings) -> None:
    async with gateway_app(settings, gateway_cors_origins="*") as (_app, client):
        response = await client.post(
            "/graphql", json=TYPENAME, headers={"origin": OTHER, **JSON_HEADERS}
        )
    assert response.headers["access-control-allow-origin"] == "*"


def test_an_origin_with_a_path_is_refused() -> None:
    with pytest.raises(
        ValueError, match=re.escape("GATEWAY_CORS_ORIGINS: 'https://a.example/app' is not")
    ):
        Settings(gateway_cors_origins="https://a.example/app")


def test_production_refuses_star_at_start_up(database_url: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "serve", "--port", str(free_port())],
        env={**_production_env(database_url, GOOD_SECRET), "GATEWAY_CORS_ORIGINS": "*"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (proc.returncode, proc.stdout, proc.stderr) == (
        2,
        "",
        "configuration error: GATEWAY_CORS_ORIGINS=* is refused in production mode: name the"
        " origins of your frontends (https://app.example.com)\n",
    )
