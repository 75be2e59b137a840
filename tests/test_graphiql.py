"""GraphiQL is served by the gateway itself: the page, its files, and what falls through."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pytest

from gateway.api.app import create_app
from gateway.api.graphiql import STATIC_DIR
from gateway.settings import Settings

BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
ASSETS = (
    "graphiql.min.js",
    "graphiql.min.css",
    "react.production.min.js",
    "react-dom.production.min.js",
)


async def test_browsers_get_the_page(http: httpx.AsyncClient) -> None:
    response = await http.get("/graphql", headers={"Accept": BROWSER_ACCEPT})
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    page = response.text
    assert "<title>Billing gateway · GraphiQL</title>" in page
    scripts = re.findall(r'<script src="([^"]+)"', page)
    styles = re.findall(r'<link rel="stylesheet" href="([^"]+)"', page)
    assert scripts == [
        "/static/graphiql/react.production.min.js",
        "/static/graphiql/react-dom.production.min.js",
        "/static/graphiql/graphiql.min.js",
    ]
    assert styles == ["/static/graphiql/graphiql.min.css"]
    # Nothing from elsewhere: every URL in the page is our own.
    assert re.findall(r"(?:src|href)=\"(?!/static/graphiql/|data:)", page) == []
    assert "http://" not in page and "https://" not in page
    config = json.loads(
        re.search(
            r'<script id="graphiql-config" type="application/json">(.*?)</script>', page, re.S
        ).group(1)
    )  # type: ignore[union-attr]
    assert "query CurrentBalances" in config["defaultQuery"]
    assert 'defaultEditorToolsVisibility: "headers"' in page
    assert "shouldPersistHeaders: false" in page


async def test_the_page_honours_the_root_path(app: Any, db: Any) -> None:
    transport = httpx.ASGITransport(app=app, root_path="/billing")
    async with httpx.AsyncClient(transport=transport, base_url="http://gw.test") as client:
        response = await client.get("/billing/graphql", headers={"Accept": "text/html"})
    assert response.status_code == 200
    assert '<script src="/billing/static/graphiql/graphiql.min.js">' in response.text


@pytest.mark.parametrize("name", ASSETS)
async def test_assets_are_served_from_the_package(http: httpx.AsyncClient, name: str) -> None:
    response = await http.get(f"/static/graphiql/{name}", headers={"Accept-Encoding": "gzip"})
    assert response.status_code == 200
    assert response.headers["content-encoding"] == "gzip"
    assert response.content == (STATIC_DIR / name).read_bytes()  # httpx decompresses
    expected = "text/css" if name.endswith(".css") else "javascript"
    assert expected in response.headers["content-type"]
    assert "etag" in response.headers


def test_the_vendored_files_carry_their_licences() -> None:
    versions = json.loads((STATIC_DIR / "VERSIONS.json").read_text())
    assert versions == {"graphiql": "3.9.0", "react": "18.3.1", "react-dom": "18.3.1"}
    for package in versions:
        licence = (STATIC_DIR / f"LICENSE.{package}").read_text()
        assert "MIT License" in licence
        assert "Permission is hereby granted, free of charge" in licence
    third_party = (STATIC_DIR / "THIRD_PARTY_LICENSES.txt").read_text()
    for bundled in ("codemirror", "markdown-it", "graphql", "@radix-ui/react-dialog"):
        assert re.search(rf"^{re.escape(bundled)} \S+ \(", third_party, re.M), bundled
    bundle = (STATIC_DIR / "graphiql.min.js").read_text()
    assert "sourceMappingURL" not in bundle
    assert 'c.version="18.3.1"' in (STATIC_DIR / "react.production.min.js").read_text()


async def test_get_queries_still_reach_graphql(http: httpx.AsyncClient) -> None:
    for accept in ("application/json", BROWSER_ACCEPT, "*/*"):
        response = await http.get(
            "/graphql", params={"query": "{ __typename }"}, headers={"Accept": accept}
        )
        assert response.status_code == 200, accept
        assert response.json() == {"data": {"__typename": "Query"}}, accept


async def test_posts_are_never_the_page(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/graphql", json={"query": "{ __typename }"}, headers={"Accept": BROWSER_ACCEPT}
    )
    assert response.status_code == 200
    assert response.json() == {"data": {"__typename": "Query"}}


async def test_a_get_without_query_that_does_not_accept_html_is_not_the_page(
    http: httpx.AsyncClient,
) -> None:
    response = await http.get("/graphql", headers={"Accept": "application/json"})
    assert response.status_code == 400
    assert "text/html" not in response.headers["content-type"]


async def test_graphiql_can_be_switched_off(settings: Settings, database_url: str) -> None:
    off = create_app(settings.model_copy(update={"gateway_graphiql": False}), database_url)
    async with off.router.lifespan_context(off):
        transport = httpx.ASGITransport(app=off)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw.test") as client:
            page = await client.get("/graphql", headers={"Accept": BROWSER_ACCEPT})
            asset = await client.get("/static/graphiql/graphiql.min.js")
            query = await client.get("/graphql", params={"query": "{ __typename }"})
    assert page.status_code == 404
    assert asset.status_code == 404
    assert query.json() == {"data": {"__typename": "Query"}}
