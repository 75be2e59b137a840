"""The usage page's files are served by the gateway at /examples/usage/, all of them local."""

from __future__ import annotations

import re

import httpx

from gateway.api.examples import USAGE_DIR
from gateway.settings import Settings
from tests.test_http import gateway_app


async def test_the_usage_page_and_its_assets_are_served(http: httpx.AsyncClient) -> None:
    page = await http.get("/examples/usage/")
    assert (page.status_code, page.headers["content-type"]) == (200, "text/html; charset=utf-8")
    assert page.text == (USAGE_DIR / "index.html").read_text()
    for name, media in (("usage.js", "text/javascript"), ("usage.css", "text/css")):
        asset = await http.get(f"/examples/usage/{name}")
        assert (asset.status_code, asset.headers["content-type"].split(";")[0]) == (200, media)
    redirect = await http.get("/examples/usage")
    assert (redirect.status_code, redirect.headers["location"]) == (
        307,
        "http://gateway.test/examples/usage/",
    )


def test_nothing_of_the_page_comes_from_elsewhere() -> None:
    for path in USAGE_DIR.iterdir():
        # Only relative references: no CDN, no font or script from another host.
        assert re.findall(r"(?:src|href)=\"(?!usage\.)[^\"]*\"", path.read_text()) == []
        assert "https://" not in path.read_text(), path.name


async def test_without_the_development_tools_there_is_no_page(settings: Settings) -> None:
    async with gateway_app(settings, gateway_graphiql=False) as (_app, client):
        response = await client.get("/examples/usage/")
    assert response.status_code == 404
