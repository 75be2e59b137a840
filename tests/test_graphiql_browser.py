"""GraphiQL in a real browser (Debian's headless Chromium, driven by Playwright), offline.

The gateway runs in uvicorn on 127.0.0.1 (a background thread) against the test database.
Every request the page makes is checked: anything not addressed to that server is blocked
and fails the test, so the page provably needs no internet access. The test reads the schema
documentation, types credentials into the Headers editor and a query into the editor, runs
it, and saves a screenshot to docs/graphiql.png.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from gateway.api.app import create_app
from gateway.demo import prepare_demo
from gateway.settings import Settings
from gateway.storage.db import Database
from tests.servers import free_port

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
SETUP = Path(__file__).parent / "system_setup.sh"
SCREENSHOT = Path(__file__).parent.parent / "docs" / "graphiql.png"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
QUERY = """query Balance {
  usageBalance(meterSlug: "ai_generations") {
    usageMeter { slug }
    availableBalance
    usedBalance
    balanceLimit
  }
}"""


@pytest.fixture(scope="module")
def chromium() -> Path:
    if not CHROMIUM.exists():
        if os.environ.get("SKIP_SYSTEM_PACKAGES") == "1":
            pytest.skip(
                f"{CHROMIUM} is missing and SKIP_SYSTEM_PACKAGES=1 forbids installing it: run"
                f" tests/{SETUP.name} (apt-get install chromium, as root) to run this test"
            )
        setup = subprocess.run(
            ["bash", str(SETUP), "chromium"], capture_output=True, text=True, timeout=900
        )
        if not CHROMIUM.exists():
            pytest.skip(
                f"{CHROMIUM} is missing and tests/{SETUP.name} could not install Debian's"
                " chromium (it needs apt-get as root or passwordless sudo, and the Debian"
                f" mirror): {(setup.stderr or setup.stdout).strip()[-500:]}"
            )
    return CHROMIUM


@pytest.fixture
def live_server(settings: Settings, database_url: str) -> Iterator[str]:
    """The gateway in uvicorn on a free port of 127.0.0.1, in a background thread."""
    port = free_port()
    config = uvicorn.Config(
        create_app(settings, database_url),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="on",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


async def test_graphiql_works_offline_in_chromium(
    chromium: Path, live_server: str, db: Database, settings: Settings, tmp_path: Path
) -> None:
    playwright_api = pytest.importorskip(
        "playwright.async_api", reason="the browser test needs the playwright package"
    )
    demo = await prepare_demo(db, settings, settings.token_secret())
    outside: list[str] = []

    async def only_our_server(route: Any) -> None:
        if route.request.url.startswith(live_server + "/"):
            await route.continue_()
        else:
            outside.append(route.request.url)
            await route.abort()

    async with playwright_api.async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(chromium), args=FLAGS)
        try:
            context = await browser.new_context(viewport={"width": 1400, "height": 860})
            await context.route("**/*", only_our_server)
            page = await context.new_page()
            page_errors: list[str] = []
            page.on("pageerror", lambda error: page_errors.append(str(error)))
            failed: list[str] = []
            page.on(
                "response",
                lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None,
            )

            await page.goto(f"{live_server}/graphql")
            await page.wait_for_selector(".graphiql-container")

            # The schema documentation (loaded by introspection, without credentials).
            await page.get_by_label("Show Documentation Explorer").click()
            await page.get_by_text("Mutation", exact=True).click()
            create_usage_event = page.locator(
                ".graphiql-doc-explorer a.graphiql-doc-explorer-field-name",
                has_text="createUsageEvent",
            )
            await create_usage_event.first.wait_for()
            assert await create_usage_event.first.inner_text() == "createUsageEvent"

            # Credentials in the Headers editor (open by default), then the query.
            await page.locator(".graphiql-editor-tool .graphiql-editor:visible .CodeMirror").click()
            await page.keyboard.insert_text(
                json.dumps({"Authorization": f"Bearer {demo.customer_token}"}, indent=2)
            )
            await page.locator(".graphiql-query-editor .CodeMirror").click()
            await page.keyboard.press("Control+A")
            await page.keyboard.insert_text(QUERY)
            # GraphiQL reads the operation name from the editor after a short debounce.
            await page.wait_for_timeout(800)
            await page.get_by_label("Execute query (Ctrl-Enter)").click()
            await page.wait_for_function(
                "document.querySelector('.graphiql-response').innerText.includes('usedBalance')"
            )
            result = json.loads(
                await page.evaluate(
                    "document.querySelector('.graphiql-response .CodeMirror').CodeMirror.getValue()"
                )
            )
            # The docs' screenshot is refreshed on request (UPDATE_SCREENSHOT=1); a normal run
            # keeps its own copy so that running the tests changes no tracked file.
            target = (
                SCREENSHOT if os.environ.get("UPDATE_SCREENSHOT") else tmp_path / "graphiql.png"
            )
            await page.screenshot(path=str(target))
            assert target.stat().st_size > 10_000
        finally:
            await browser.close()

    assert result == {
        "data": {
            "usageBalance": {
                "usageMeter": {"slug": "ai_generations"},
                "availableBalance": 97,
                "usedBalance": 3,
                "balanceLimit": 100,
            }
        }
    }
    assert outside == []
    assert page_errors == []
    assert failed == []
    assert SCREENSHOT.stat().st_size > 20_000
