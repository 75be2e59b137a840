"""OpenTelemetry tracing: `serve` with OTEL_EXPORTER_OTLP_ENDPOINT exports spans over
OTLP/HTTP to a receiver of the test's own; the caller's `traceparent` is continued; spans for
the operation, the resolvers and each SQL statement. Without the variable, nothing of
OpenTelemetry is loaded."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import httpx

from gateway.demo import DEMO_CUSTOMER, prepare_demo
from gateway.settings import Settings
from gateway.storage.db import Database
from tests.otlp_receiver import ReceivedSpan, Receiver, otlp_receiver
from tests.servers import cli_server

ROOT = Path(__file__).parent.parent
RECORD = """
mutation Record($input: CreateUsageEventInput!) {
  createUsageEvent(input: $input) { __typename }
}
"""
PAGE = "query Page { customers(first: 1) { edges { node { externalId } } } }"


def _env(settings: Settings, database_url: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "GATEWAY_"))},
        "DATABASE_URL": database_url,
        "GATEWAY_TOKEN_SECRET": settings.token_secret(),
        "GATEWAY_DATA_DIR": str(tmp_path / "data"),
        **extra,
    }


def _spans_of(receiver: Receiver, trace_id: str, parent: str) -> list[ReceivedSpan]:
    """The spans of a trace, once its root (the server span, which ends last) has arrived."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        spans = [s for s in receiver.received() if s.trace_id == trace_id]
        if any(s.parent_span_id == parent for s in spans):
            return spans
        time.sleep(0.05)
    raise AssertionError(f"no server span of trace {trace_id} arrived")


def _traceparent() -> tuple[str, str, str]:
    trace_id, parent = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, parent, f"00-{trace_id}-{parent}-01"


async def test_spans_continue_the_callers_trace(
    db: Database, settings: Settings, database_url: str, tmp_path: Path
) -> None:
    demo = await prepare_demo(db, settings, settings.token_secret())
    headers = {"Authorization": f"Bearer {demo.secret_key}"}
    with (
        otlp_receiver() as receiver,
        (tmp_path / "server.log").open("w") as log,
        cli_server(
            _env(
                settings,
                database_url,
                tmp_path,
                OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
                OTEL_BSP_SCHEDULE_DELAY="100",
                OTEL_SERVICE_NAME="gateway-under-test",
            ),
            log,
        ) as base,
    ):
        client = httpx.AsyncClient(base_url=base)
        # A query through graphql-core: operation, resolver and SQL spans.
        query_trace, query_parent, traceparent = _traceparent()
        response = await client.post(
            "/graphql",
            json={"query": PAGE},
            headers={**headers, "traceparent": traceparent},
            timeout=30,
        )
        assert response.json() == {
            "data": {"customers": {"edges": [{"node": {"externalId": DEMO_CUSTOMER}}]}}
        }
        assert response.status_code == 200
        # The hot mutation through the compiled executor: the operation span is there too.
        record_trace, record_parent, traceparent = _traceparent()
        recorded = await client.post(
            "/graphql",
            json={
                "query": RECORD,
                "variables": {
                    "input": {
                        "target": {"usageMeterSlug": "ai_generations"},
                        "amount": 1,
                        "subscriptionId": str(demo.subscription_id),
                        "transactionId": "traced-1",
                    }
                },
            },
            headers={**headers, "traceparent": traceparent},
            timeout=30,
        )
        assert recorded.json() == {
            "data": {"createUsageEvent": {"__typename": "UsageEventRecorded"}}
        }
        query_spans = _spans_of(receiver, query_trace, query_parent)
        record_spans = _spans_of(receiver, record_trace, record_parent)
        await client.aclose()
    assert set(receiver.paths) == {"/v1/traces"}
    # The access records carry the trace and span ids of their request's server span.
    access = [
        json.loads(line)
        for line in (tmp_path / "server.log").read_text().splitlines()
        if '"gateway.access"' in line and '"POST"' in line
    ]
    roots = {
        trace_id: next(s for s in spans if s.parent_span_id == parent).span_id
        for trace_id, parent, spans in (
            (query_trace, query_parent, query_spans),
            (record_trace, record_parent, record_spans),
        )
    }
    assert [(r["trace_id"], r["span_id"]) for r in access] == list(roots.items())

    for spans, parent, operation in (
        (query_spans, query_parent, "GraphQL Query: Page"),
        (record_spans, record_parent, "GraphQL Query: Record"),
    ):
        assert {s.service for s in spans} == {"gateway-under-test"}
        by_id = {s.span_id: s for s in spans}
        # Exactly one span continues the caller's: the HTTP server span of the request.
        (root,) = [s for s in spans if s.parent_span_id == parent]
        assert root.name == "POST /graphql"
        assert (root.attributes["http.method"], root.attributes["http.target"]) == (
            "POST",
            "/graphql",
        )
        # Every other span descends from it, within the caller's trace.
        for span in spans:
            ancestor = span
            while ancestor.parent_span_id != parent:
                ancestor = by_id[ancestor.parent_span_id]
            assert ancestor is root, span.name
        names = [s.name for s in spans]
        assert names.count(operation) == 1, names
        (op,) = [s for s in spans if s.name == operation]
        assert op.parent_span_id == root.span_id
        sql = [s for s in spans if "db.statement" in s.attributes]
        assert {s.attributes["db.system"] for s in sql} == {"postgresql"}
        statements = [str(s.attributes["db.statement"]) for s in sql]
        if operation.endswith("Page"):
            assert names.count("GraphQL Resolving: customers") == 1, names
            assert any("customers" in statement for statement in statements), statements
        else:
            # As without tracing: the subscription's customer (the first event of a
            # subscription in this process: gateway.billing.owners caches it), then
            # record_usage_event(); the key was cached by the first request.
            assert len(statements) == 2, statements
            assert statements[0].startswith("SELECT id, customer_id FROM subscriptions")
            assert statements[1].startswith("SELECT record_usage_event("), statements
            # The compiled executor runs no graphql-core resolvers.
            assert [n for n in names if n.startswith("GraphQL Resolving")] == []


def test_tracing_off_loads_no_opentelemetry(settings: Settings, database_url: str) -> None:
    """Without OTEL_EXPORTER_OTLP_ENDPOINT the app is built without any of it: no SDK, exporter
    or instrumentation imported, no tracer provider, no middleware, the driver untouched."""
    program = """
import sys
from gateway.api.app import create_app
from gateway.settings import Settings
app = create_app(Settings(database_url=sys.argv[1], gateway_token_secret="x" * 40), sys.argv[1])
import asyncpg
# FastAPI imports the OpenTelemetry API by itself (its native telemetry stays off while no
# provider is set); the SDK, the exporter and the instrumentations are the gateway's.
ours = ("opentelemetry.sdk", "opentelemetry.exporter", "opentelemetry.instrumentation")
loaded = sorted(m for m in sys.modules if m.startswith(ours))
from opentelemetry import trace
provider = type(trace.get_tracer_provider()).__name__
wrapped = hasattr(asyncpg.Connection.fetch, "__wrapped__")
middleware = [m.cls.__module__ for m in app.user_middleware if "opentelemetry" in m.cls.__module__]
print(loaded, provider, wrapped, middleware)
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    proc = subprocess.run(
        [sys.executable, "-c", program, database_url],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert proc.stdout.strip() == "[] ProxyTracerProvider False []"
