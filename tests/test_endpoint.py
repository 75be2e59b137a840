"""/graphql is answered by gateway.api.endpoint, in front of FastAPI: what FastAPI's routing
and the app's middlewares did for it still happens, exactly once per request."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from starlette.middleware.base import BaseHTTPMiddleware

from gateway.api.endpoint import GraphQLEndpoint, route_path


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_one_request_is_recorded_once(
    http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    labels = {"route": "/graphql", "method": "POST", "status": "200"}
    before = sample("gateway_http_requests_total", **labels)
    with caplog.at_level(logging.INFO, logger="gateway.access"):
        response = await http.post(
            "/graphql", json={"query": "{ __typename }"}, headers={"X-Request-ID": "once-1"}
        )
    assert (response.status_code, response.json()) == (200, {"data": {"__typename": "Query"}})
    assert response.headers["x-request-id"] == "once-1"
    assert sample("gateway_http_requests_total", **labels) == before + 1
    records = [r for r in caplog.records if r.name == "gateway.access"]
    assert [r.getMessage() for r in records] == ["POST /graphql 200"]


async def test_other_methods_and_the_trailing_slash_are_answered_as_fastapi_did(
    http: httpx.AsyncClient,
) -> None:
    for method in ("PUT", "DELETE", "PATCH", "OPTIONS"):
        response = await http.request(method, "/graphql", content=b"{}")
        assert response.status_code == 405, method
        assert response.headers["allow"] == "GET"
        assert response.headers["content-type"] == "application/json"
        assert len(response.headers["x-request-id"]) == 32
        assert response.json() == {
            "errors": [
                {"message": "Method Not Allowed", "extensions": {"code": "METHOD_NOT_ALLOWED"}}
            ]
        }
    for method in ("GET", "POST"):
        slash = await http.request(method, "/graphql/", json={"query": "{ __typename }"})
        assert (slash.status_code, slash.headers["location"]) == (
            307,
            "http://gateway.test/graphql",
        )
    page = await http.head("/graphql", headers={"Accept": "text/html"})
    assert (page.status_code, page.headers["content-type"], page.content) == (
        200,
        "text/html; charset=utf-8",
        b"",
    )


async def test_no_middleware_of_the_app_is_a_base_http_middleware(app: Any) -> None:
    classes = [m.cls for m in app.user_middleware]
    assert GraphQLEndpoint in classes
    assert not [c for c in classes if isinstance(c, type) and issubclass(c, BaseHTTPMiddleware)]


def test_route_path_strips_the_mount_point_as_starlette_does() -> None:
    assert route_path({"path": "/graphql"}) == "/graphql"
    assert route_path({"path": "/api/graphql", "root_path": "/api"}) == "/graphql"
    assert route_path({"path": "/graphql", "root_path": "/api"}) == "/graphql"
    assert route_path({"path": "/apigraphql", "root_path": "/api"}) == "/apigraphql"
