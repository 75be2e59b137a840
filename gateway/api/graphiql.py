"""GraphiQL at /graphql, served entirely by the gateway (works with no internet access).

The JavaScript and CSS are the prebuilt UMD files of the npm packages ``graphiql``, ``react``
and ``react-dom`` (versions in ``static/graphiql/VERSIONS.json``, licences beside them),
vendored by ``scripts/vendor_graphiql.py``; nothing is loaded from a CDN. Strawberry's own IDE
page is switched off (``graphql_ide=None``): the /graphql endpoint (``gateway.api.endpoint``)
answers with this page only the requests strawberry would have answered with its IDE
(``wants_page``: a GET without a ``query`` parameter that accepts HTML), and hands every other
request to the GraphQL view, GET queries included.

The page opens with the Headers editor visible: a secret key or a customer session token goes
there as ``{"Authorization": "Bearer ..."}``. Headers are not persisted in the browser's
storage, so a secret key pasted in never outlives the tab.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

STATIC_DIR = Path(__file__).parent / "static" / "graphiql"
STATIC_PATH = "/static/graphiql"
GRAPHQL_PARAMS = ("query", "extensions", "documentId")  # a GET with one of them is a request

DEFAULT_QUERY = """\
# Welcome to the billing gateway.
#
# 1. Open "Headers" below and give your credentials:
#    {"Authorization": "Bearer <key or token>"}
#    A secret key (sk_...) comes from
#      billing-gateway keys create --name me
#    a customer session token (cst_...) from the
#    createCustomerSession mutation;
#    billing-gateway demo prints one of each.
# 2. A secret key must name the customer: open
#    "Variables" and give its externalId,
#      {"customer": "<externalId>"}
#    (without it billing is null, and the answer's
#    extensions.warnings says so). A customer
#    token needs nothing: it reads its own.
# 3. Run (the play button, or Ctrl-Enter).
#
# Docs (top left) browses the whole schema.

query CurrentBalances($customer: String) {
  billing(customerExternalId: $customer) {
    customer { externalId }
    currentSubscription { id status }
    usageBalances {
      usageMeter { slug }
      availableBalance
      usedBalance
      balanceLimit
    }
    usageEvents(first: 5) {
      edges { node { amount transactionId createdAt } }
    }
  }
}
"""

_PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <meta name="robots" content="noindex">
  <title>Billing gateway · GraphiQL</title>
  <link rel="icon" href="data:,">
  <link rel="stylesheet" href="{static}/graphiql.min.css">
  <style>
    html, body {{ margin: 0; height: 100%; overflow: hidden; }}
    #graphiql {{ height: 100vh; }}
  </style>
</head>
<body>
  <div id="graphiql">Loading GraphiQL…</div>
  <script src="{static}/react.production.min.js"></script>
  <script src="{static}/react-dom.production.min.js"></script>
  <script src="{static}/graphiql.min.js"></script>
  <script id="graphiql-config" type="application/json">{config}</script>
  <script>
    (function () {{
      var config = JSON.parse(document.getElementById("graphiql-config").textContent);
      var fetcher = GraphiQL.createFetcher({{ url: window.location.pathname }});
      var root = ReactDOM.createRoot(document.getElementById("graphiql"));
      root.render(React.createElement(GraphiQL, {{
        fetcher: fetcher,
        defaultQuery: config.defaultQuery,
        defaultEditorToolsVisibility: "headers",
        isHeadersEditorEnabled: true,
        shouldPersistHeaders: false
      }}));
    }})();
  </script>
</body>
</html>
"""


def _script_json(value: object) -> str:
    """JSON that is safe inside a <script> element."""
    return json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render_page(root_path: str) -> str:
    """The page; it posts queries to its own address (the GraphQL endpoint)."""
    config = {"defaultQuery": DEFAULT_QUERY}
    return _PAGE.format(
        static=html.escape(root_path + STATIC_PATH, quote=True), config=_script_json(config)
    )


def wants_page(scope: Scope) -> bool:
    """Strawberry's rule for showing its IDE: a GET (or HEAD) without a ``query`` parameter
    from a client that accepts HTML (``text/html`` or ``*/*``); a GET naming a persisted
    document (``extensions`` or ``documentId``, gateway.api.persisted) is a query too."""
    if scope.get("method") not in ("GET", "HEAD"):
        return False
    request = Request(scope)
    if any(name in request.query_params for name in GRAPHQL_PARAMS):
        return False
    accept = request.headers.get("accept", "")
    return "text/html" in accept or "*/*" in accept


async def graphiql_page(request: Request) -> Response:
    return HTMLResponse(
        render_page(request.scope.get("root_path", "")),
        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
    )


def graphiql_routes() -> list[BaseRoute]:
    """The static files of the page (the page itself: ``gateway.api.endpoint``, at /graphql)."""
    return [
        Mount(
            STATIC_PATH,
            app=GZipMiddleware(StaticFiles(directory=STATIC_DIR)),
            name="graphiql-static",
        ),
    ]
