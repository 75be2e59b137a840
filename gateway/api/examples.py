"""The end-user usage page at /examples/usage/: static HTML, CSS and JavaScript.

A starting point for app developers (docs/client-guide.md walks through it): a customer
session token opens it (``#token=...`` in the URL, or typed in), it shows a bar per meter, an
"out of credits" notice with the upgrade options, a button that records one unit the
client-side way, the recent usage, and live updates through the ``usageBalance``
subscription. Every asset is in ``static/usage/``: nothing comes from a CDN. Served beside
GraphiQL, when the development tools are on (``Settings.graphiql``).
"""

from __future__ import annotations

from pathlib import Path

from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles

USAGE_DIR = Path(__file__).parent / "static" / "usage"
USAGE_PATH = "/examples/usage"


def example_routes() -> list[BaseRoute]:
    # html=True: /examples/usage/ answers index.html (/examples/usage redirects there).
    return [Mount(USAGE_PATH, app=StaticFiles(directory=USAGE_DIR, html=True), name="usage-page")]
