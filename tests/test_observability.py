"""/healthz, /readyz, /metrics, request ids, JSON logs, and the exact SQL statement counter."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from gateway.api.app import create_app
from gateway.api.readiness import readiness
from gateway.demo import prepare_demo
from gateway.logs import JsonFormatter
from gateway.settings import Settings
from gateway.storage.db import Database, start_counting
from gateway.storage.migrate import current_head
from tests.conftest import _with_database
from tests.pgwire import StatementRecorder
from tests.servers import free_port

ROOT = Path(__file__).parent.parent

RECORD = """
mutation RecordGeneration($input: CreateUsageEventInput!) {
  createUsageEvent(input: $input) {
    __typename
    ... on UsageEventRecorded { replayed balance { availableBalance usedBalance } }
    ... on UserError { code message }
  }
}
"""
BILLING = """
query Dashboard($customer: String!) {
  billing(customerExternalId: $customer) {
    customer { externalId }
    currentSubscription { id status price { slug } usageBalances { usageMeter { slug } availableBalance } }
    catalog { products { slug features { slug } } }
    featureAccess(featureSlug: "priority_support")
  }
}
"""


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
async def demo(db: Database, settings: Settings) -> Any:
    """The demo data (pricing model, customer demo-user on pro, usage) and a secret key."""
    return await prepare_demo(db, settings, settings.token_secret())


def _generation(subscription_id: object, transaction_id: str) -> dict[str, Any]:
    return {
        "input": {
            "target": {"usageMeterSlug": "ai_generations"},
            "amount": 1,
            "subscriptionId": str(subscription_id),
            "transactionId": transaction_id,
        }
    }


# --- health and readiness ---------------------------------------------------------------------


async def test_healthz_answers_without_the_database(http: httpx.AsyncClient) -> None:
    response = await http.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_is_ready_when_the_database_is_at_the_head_migration(
    http: httpx.AsyncClient,
) -> None:
    response = await http.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "database": "ok", "migration": current_head()}
    assert response.headers["cache-control"] == "no-store"


async def test_readyz_is_503_when_the_database_is_behind_the_code(
    http: httpx.AsyncClient, db: Database
) -> None:
    head = current_head()
    await db.execute("UPDATE alembic_version SET version_num = 'older'")
    try:
        response = await http.get("/readyz")
    finally:
        await db.execute("UPDATE alembic_version SET version_num = $1", head)
    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "database": "ok",
        "migration": "older",
        "expected_migration": head,
        "reason": "the database is not at this version's migration",
    }
    assert (await http.get("/readyz")).status_code == 200


async def test_readyz_is_503_when_migrations_were_never_applied(database_url: str) -> None:
    # A database without the alembic_version table: the admin database of the server.
    db = Database(_with_database(database_url, "postgres"), min_size=1, max_size=1)
    await db.connect()
    try:
        assert await db.fetchval("SELECT to_regclass('alembic_version')") is None
        status, body = await readiness(db)
    finally:
        await db.close()
    assert status == 503
    assert body == {
        "status": "unavailable",
        "database": "ok",
        "migration": None,
        "expected_migration": current_head(),
        "reason": "migrations were never applied",
    }


class _Unreachable:
    async def probe(self, sql: str, seconds: float) -> object:
        raise ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 1)")


async def test_readyz_is_503_when_the_database_is_unreachable() -> None:
    status, body = await readiness(_Unreachable())
    assert status == 503
    assert body == {
        "status": "unavailable",
        "database": "unreachable",
        "reason": "ConnectionRefusedError: [Errno 111] Connect call failed ('127.0.0.1', 1)",
    }


# --- metrics ----------------------------------------------------------------------------------


async def test_metrics_count_operations_outcomes_and_usage_results(
    http: httpx.AsyncClient, demo: Any
) -> None:
    headers = {"Authorization": f"Bearer {demo.secret_key}"}
    op = {"operation": "RecordGeneration", "type": "mutation"}
    before = {
        "ok": sample("gateway_graphql_operations_total", **op, outcome="ok"),
        "request_error": sample("gateway_graphql_operations_total", **op, outcome="request_error"),
        "latency": sample("gateway_graphql_operation_duration_seconds_count", **op),
        "recorded": sample("gateway_usage_events_total", result="recorded"),
        "replayed": sample("gateway_usage_events_total", result="replayed"),
        "conflict": sample("gateway_usage_events_total", result="idempotency_conflict"),
        "http": sample(
            "gateway_http_requests_total", route="/graphql", method="POST", status="200"
        ),
        "queries": sample("gateway_db_queries_total"),
    }
    body: dict[str, Any] = {
        "query": RECORD,
        "variables": _generation(demo.subscription_id, "metrics-1"),
    }
    first = await http.post("/graphql", json=body, headers=headers)
    again = await http.post("/graphql", json=body, headers=headers)
    body["variables"]["input"]["amount"] = 2
    conflict = await http.post("/graphql", json=body, headers=headers)
    invalid = await http.post(
        "/graphql", json={"query": RECORD, "variables": {"input": {}}}, headers=headers
    )
    assert first.json()["data"]["createUsageEvent"] == {
        "__typename": "UsageEventRecorded",
        "replayed": False,
        "balance": {"availableBalance": 96, "usedBalance": 4},
    }
    assert again.json()["data"]["createUsageEvent"]["replayed"] is True
    assert conflict.json()["data"]["createUsageEvent"]["__typename"] == "IdempotencyConflict"
    assert invalid.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"

    assert sample("gateway_graphql_operations_total", **op, outcome="ok") == before["ok"] + 3
    assert sample("gateway_graphql_operations_total", **op, outcome="request_error") == (
        before["request_error"] + 1
    )
    assert sample("gateway_graphql_operation_duration_seconds_count", **op) == before["latency"] + 4
    assert sample("gateway_usage_events_total", result="recorded") == before["recorded"] + 1
    assert sample("gateway_usage_events_total", result="replayed") == before["replayed"] + 1
    assert sample("gateway_usage_events_total", result="idempotency_conflict") == (
        before["conflict"] + 1
    )
    statuses = [r.status_code for r in (first, again, conflict, invalid)]
    assert sample(
        "gateway_http_requests_total", route="/graphql", method="POST", status="200"
    ) == before["http"] + statuses.count(200)
    # Each recorded, replayed or conflicting event: one statement; the key is looked up once
    # (then cached).
    assert sample("gateway_db_queries_total") >= before["queries"] + 4

    response = await http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    assert {
        "gateway_db_queries",
        "gateway_http_requests",
        "gateway_http_request_duration_seconds",
        "gateway_graphql_operations",
        "gateway_graphql_operation_duration_seconds",
        "gateway_usage_events",
    } <= families.keys()
    exposed = {
        s.labels["result"]: s.value
        for s in families["gateway_usage_events"].samples
        if s.name == "gateway_usage_events_total"
    }
    assert exposed["recorded"] == sample("gateway_usage_events_total", result="recorded")
    assert exposed["replayed"] == sample("gateway_usage_events_total", result="replayed")


async def test_anonymous_operations_unauthenticated_and_unknown_routes(
    http: httpx.AsyncClient,
) -> None:
    anonymous = {"operation": "anonymous", "type": "query", "outcome": "ok"}
    before_anonymous = sample("gateway_graphql_operations_total", **anonymous)
    before_401 = sample(
        "gateway_http_requests_total", route="/graphql", method="POST", status="401"
    )
    before_other = sample("gateway_http_requests_total", route="other", method="GET", status="404")
    assert (await http.post("/graphql", json={"query": "{ __typename }"})).status_code == 200
    refused = await http.post(
        "/graphql", json={"query": "{ __typename }"}, headers={"Authorization": "Bearer sk_unknown"}
    )
    assert refused.status_code == 401
    assert (await http.get("/no/such/page")).status_code == 404
    assert sample("gateway_graphql_operations_total", **anonymous) == before_anonymous + 1
    assert (
        sample("gateway_http_requests_total", route="/graphql", method="POST", status="401")
        == before_401 + 1
    )
    assert (
        sample("gateway_http_requests_total", route="other", method="GET", status="404")
        == before_other + 1
    )


# --- request ids and logs ---------------------------------------------------------------------


async def test_request_id_is_echoed_generated_or_replaced(http: httpx.AsyncClient) -> None:
    given = await http.get("/healthz", headers={"X-Request-ID": "req-42.a:b_C"})
    assert given.headers["x-request-id"] == "req-42.a:b_C"
    generated = await http.get("/healthz")
    assert re.fullmatch(r"[0-9a-f]{32}", generated.headers["x-request-id"])
    other = await http.get("/healthz")
    assert other.headers["x-request-id"] != generated.headers["x-request-id"]
    for bad in ("has space", "x" * 129, "semi;colon"):
        replaced = await http.get("/healthz", headers={"X-Request-ID": bad})
        assert re.fullmatch(r"[0-9a-f]{32}", replaced.headers["x-request-id"]), bad


@pytest.fixture
def json_log() -> Any:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("gateway")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


async def test_access_log_is_json_with_the_request_id(
    http: httpx.AsyncClient, json_log: Callable[[], list[dict[str, Any]]]
) -> None:
    response = await http.get("/readyz", headers={"X-Request-ID": "trace-7"})
    assert response.status_code == 200
    records = [r for r in json_log() if r["logger"] == "gateway.access"]
    assert len(records) == 1
    record = records[0]
    assert set(record) == {
        "time",
        "level",
        "logger",
        "message",
        "pid",
        "request_id",
        "method",
        "path",
        "status",
        "duration_ms",
    }
    assert record["pid"] == os.getpid()
    assert record["message"] == "GET /readyz 200"
    assert (
        record["level"],
        record["request_id"],
        record["method"],
        record["path"],
        record["status"],
    ) == ("info", "trace-7", "GET", "/readyz", 200)
    assert record["duration_ms"] > 0
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", record["time"])


async def test_masked_errors_are_logged_with_the_request_id(
    http: httpx.AsyncClient,
    demo: Any,
    json_log: Callable[[], list[dict[str, Any]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from gateway.billing import usage

    async def broken(*_args: object) -> object:
        raise RuntimeError("the database caught fire")

    monkeypatch.setattr(usage, "record_usage_event", broken)
    response = await http.post(
        "/graphql",
        json={"query": RECORD, "variables": _generation(demo.subscription_id, "boom")},
        headers={"Authorization": f"Bearer {demo.secret_key}", "X-Request-ID": "boom-1"},
    )
    error = response.json()["errors"][0]
    assert error["extensions"]["code"] == "INTERNAL_SERVER_ERROR"
    assert "fire" not in response.text
    records = [r for r in json_log() if r["logger"] == "gateway.errors"]
    assert len(records) == 1
    assert records[0]["request_id"] == "boom-1"
    assert records[0]["error_id"] == error["extensions"]["errorId"]
    assert "RuntimeError: the database caught fire" in records[0]["exception"]


# --- the SQL statement counter is exact ---------------------------------------------------------


@pytest.fixture
async def proxied_app(
    settings: Settings, database_url: str
) -> AsyncIterator[tuple[httpx.AsyncClient, StatementRecorder]]:
    """The app connected through the statement recorder, with a fixed-size pool (so that no
    connection is opened, and no driver set-up runs, in the middle of a measured request)."""
    recorder = StatementRecorder(database_url)
    url = await recorder.start()
    fixed = settings.model_copy(update={"gateway_pool_min_size": 4, "gateway_pool_max_size": 4})
    application = create_app(fixed, url)
    try:
        async with application.router.lifespan_context(application):
            transport = httpx.ASGITransport(app=application)
            async with httpx.AsyncClient(transport=transport, base_url="http://gw.test") as client:
                yield client, recorder
    finally:
        await recorder.stop()


# asyncpg's own statements: its default reset when a connection goes back to the pool, and
# its type introspection the first time a connection meets a type. Not the gateway's.
def _driver_statement(sql: str) -> bool:
    return sql.startswith("SELECT pg_advisory_unlock_all();") or "typeinfo" in sql


def _normal(sql: str) -> str:
    return " ".join(sql.split()).rstrip(";")


@pytest.mark.parametrize("operation", ["mutation", "query"])
async def test_sql_counter_equals_the_statements_the_server_ran(
    db: Database,
    demo: Any,
    proxied_app: tuple[httpx.AsyncClient, StatementRecorder],
    operation: str,
) -> None:
    client, recorder = proxied_app
    headers = {"Authorization": f"Bearer {demo.secret_key}"}

    def body(n: int) -> dict[str, Any]:
        if operation == "mutation":
            return {"query": RECORD, "variables": _generation(demo.subscription_id, f"wire-{n}")}
        return {"query": BILLING, "variables": {"customer": "demo-user"}}

    for n in range(3):  # warm every pooled connection's statement and type caches
        assert (await client.post("/graphql", json=body(n), headers=headers)).status_code == 200
    recorder.executed.clear()
    before = sample("gateway_db_queries_total")
    counter = start_counting()

    response = await client.post("/graphql", json=body(99), headers=headers)

    increase = sample("gateway_db_queries_total") - before
    assert response.status_code == 200
    assert response.json().get("errors") is None
    seen = [s for s in recorder.executed if not _driver_statement(s)]
    driver = [s for s in recorder.executed if _driver_statement(s)]
    # The counter's increase is the number of statements the server ran for the request...
    assert increase == len(seen) == counter.count
    # ... and they are the very statements the gateway counted (concurrent resolvers may
    # interleave, so compare them as multisets).
    assert Counter(map(_normal, seen)) == Counter(map(_normal, counter.statements))
    assert not any("api_keys" in s for s in seen)  # the key is in the process's cache
    if operation == "mutation":
        assert any("record_usage_event" in s for s in seen)
        assert response.json()["data"]["createUsageEvent"]["__typename"] == "UsageEventRecorded"
    else:
        assert len(seen) >= 3
    # Nothing else went over the wire: the pool's reset on release is switched off
    # (gateway.storage.db._keep_session); with asyncpg's default reset there would be exactly one per
    # checkout, and these operations run no explicit transaction (one checkout per statement).
    assert all(s.startswith("SELECT pg_advisory_unlock_all();") for s in driver), driver
    assert len(driver) in (0, len(seen)), driver


# --- several worker processes -------------------------------------------------------------------


def test_workers_log_json_and_metrics_add_up_over_all_of_them(
    settings: Settings, database_url: str, tmp_path: Path
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "server.log"
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env.update(DATABASE_URL=database_url, GATEWAY_TOKEN_SECRET=settings.token_secret())
    with log.open("w") as log_file:
        server = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve", "--workers", "2", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    probe = {"query": "query WorkerProbe { __typename }"}
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(base + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.1)
        sent = 0
        while True:  # until both workers have answered some (each request on a new connection)
            assert httpx.post(base + "/graphql", json=probe, timeout=10).status_code == 200
            sent += 1
            pids = {r["pid"] for r in _records(log, "gateway.access") if r["path"] == "/graphql"}
            if len(pids) == 2 and sent >= 10:
                break
            assert sent < 300, "one worker answered everything"
        metrics = httpx.get(base + "/metrics", timeout=10).text
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=60) == 0
    counted = {
        s.labels["operation"]: s.value
        for family in text_string_to_metric_families(metrics)
        if family.name == "gateway_graphql_operations"
        for s in family.samples
        if s.name == "gateway_graphql_operations_total"
    }
    # Anonymous callers add no operation labels: their named probes count as "other".
    assert counted["other"] == sent
    assert "WorkerProbe" not in counted
    access = [r for r in _records(log, "gateway.access") if r["path"] == "/graphql"]
    assert len(access) == sent
    assert all(re.fullmatch(r"[0-9a-f]{32}", r["request_id"]) for r in access)


def _records(log: Path, logger: str) -> list[dict[str, Any]]:
    """The complete JSON lines of ``logger``: read while the server runs, the file may end in
    the middle of a line still being written (seen once in CI), which is not a record yet."""
    text = log.read_text()
    lines = text[: text.rfind("\n") + 1].splitlines()
    return [
        r
        for r in (json.loads(line) for line in lines if line.startswith("{"))
        if r["logger"] == logger
    ]


async def test_metrics_count_each_result_of_a_batch(http: httpx.AsyncClient, demo: Any) -> None:
    headers = {"Authorization": f"Bearer {demo.secret_key}"}
    labels = ("recorded", "replayed", "invalid_input")
    before = {r: sample("gateway_usage_events_total", result=r) for r in labels}
    items = [
        _generation(demo.subscription_id, "batch-1")["input"],
        _generation(demo.subscription_id, "batch-2")["input"],
        _generation(demo.subscription_id, "batch-1")["input"],
        {**_generation(demo.subscription_id, "batch-3")["input"], "amount": 0},
    ]
    response = await http.post(
        "/graphql",
        json={
            "query": "mutation($i: [CreateUsageEventInput!]!) {"
            " createUsageEvents(input: $i) { __typename } }",
            "variables": {"i": items},
        },
        headers=headers,
    )
    assert [r["__typename"] for r in response.json()["data"]["createUsageEvents"]] == [
        "UsageEventRecorded",
        "UsageEventRecorded",
        "UsageEventRecorded",
        "InvalidInput",
    ]
    after = {r: sample("gateway_usage_events_total", result=r) for r in labels}
    assert {r: after[r] - before[r] for r in labels} == {
        "recorded": 2,
        "replayed": 1,
        "invalid_input": 1,
    }
