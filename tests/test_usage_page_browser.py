"""The usage page (/examples/usage/) in headless Chromium, from another origin than the gateway.

The page is opened as http://localhost:<port> while it talks to the gateway as
http://127.0.0.1:<port> (another origin: CORS for the fetches, an allowed Origin for the
WebSocket), with the demo customer's session token. It shows the balances; its button
records one unit and moves the bar without a reload; usage recorded with the secret key
through another gateway process appears within 2 s (the subscription). Every request must go
to the gateway: nothing is loaded from elsewhere.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.api.examples import USAGE_DIR
from gateway.demo import prepare_demo
from gateway.settings import Settings
from gateway.storage.db import Database
from tests.factories import CREATE_USAGE_EVENT
from tests.servers import free_port, gateway_processes, static_server
from tests.test_graphiql_browser import FLAGS
from tests.test_graphiql_browser import chromium as chromium

pytestmark = pytest.mark.browser

SCREENSHOT = Path(__file__).parent.parent / "docs" / "usage-page.png"
GENERATIONS = '.meter[data-meter="ai_generations"]'


async def test_the_usage_page_follows_usage_live_from_another_origin(
    chromium: Path, db: Database, settings: Settings, database_url: str, tmp_path: Path
) -> None:
    playwright_api = pytest.importorskip(
        "playwright.async_api", reason="the browser test needs the playwright package"
    )
    demo = await prepare_demo(db, settings, settings.token_secret())
    # The gateway's processes allow the page's origin: it is fixed before they start, so
    # the page is served by a server of its own on a port chosen now.
    port = free_port()
    page_origin = f"http://localhost:{port}"
    with (
        gateway_processes(database_url, 2, GATEWAY_CORS_ORIGINS=page_origin) as (a, b),
        static_server(port, USAGE_DIR),
    ):
        gateway = a
        page_url = f"{page_origin}/index.html?gateway={gateway}#token={demo.customer_token}"
        outside: list[str] = []

        async def only_the_gateway(route: Any) -> None:
            url = route.request.url
            if url.startswith((gateway + "/", page_origin + "/")):
                await route.continue_()
            else:
                outside.append(url)
                await route.abort()

        async with playwright_api.async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=str(chromium), args=FLAGS)
            try:
                context = await browser.new_context(viewport={"width": 900, "height": 760})
                await context.route("**/*", only_the_gateway)
                page = await context.new_page()
                errors: list[str] = []
                page.on("pageerror", lambda error: errors.append(str(error)))
                await page.goto(page_url)
                used = page.locator(f"{GENERATIONS} .used")
                await page.wait_for_function(
                    "document.getElementById('status').textContent === 'Live'"
                )
                assert await used.inner_text() == "3 of 100 used"
                assert await page.locator(".meter h3").all_inner_texts() == [
                    "API calls",
                    "AI generations",
                ]
                await page.evaluate("window.loadedOnce = true")

                await page.locator(f"{GENERATIONS} button.use").click()
                await page.wait_for_function(
                    f"document.querySelector('{GENERATIONS} .used').textContent === '4 of 100 used'"
                )
                width = await page.locator(f"{GENERATIONS} .fill").evaluate("e => e.style.width")
                assert width == "4%"
                assert await page.evaluate("window.loadedOnce") is True  # no reload

                async with httpx.AsyncClient() as client:
                    response = await client.post(
                        b + "/graphql",
                        json={
                            "query": CREATE_USAGE_EVENT,
                            "variables": {
                                "input": {
                                    "target": {"usageMeterSlug": "ai_generations"},
                                    "subscriptionId": str(demo.subscription_id),
                                    "amount": 2,
                                    "transactionId": "from-the-backend",
                                }
                            },
                        },
                        headers={"Authorization": f"Bearer {demo.secret_key}"},
                    )
                assert response.json()["data"]["createUsageEvent"]["__typename"] == (
                    "UsageEventRecorded"
                ), response.text
                started = time.monotonic()
                await page.wait_for_function(
                    f"document.querySelector('{GENERATIONS} .used').textContent"
                    " === '6 of 100 used'",
                    timeout=2000,
                )
                assert time.monotonic() - started < 2
                # The recent usage, newest first: the backend's event, then the button's.
                await page.wait_for_function(
                    "document.querySelector('#recent li').textContent.endsWith(': 2 AI generations')"
                )
                recent = await page.locator("#recent li").all_inner_texts()
                assert [r.split(": ", 1)[1] for r in recent[:2]] == [
                    "2 AI generations",
                    "1 AI generations",
                ]
                target = (
                    SCREENSHOT if os.environ.get("UPDATE_SCREENSHOT") else tmp_path / "usage.png"
                )
                await page.screenshot(path=str(target), full_page=True)
                assert target.stat().st_size > 10_000
            finally:
                await browser.close()
    assert outside == []
    assert errors == []
