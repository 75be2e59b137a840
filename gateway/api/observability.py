"""Health, readiness, Prometheus metrics and request ids (the log format: gateway.logs).

- ``/healthz``: the process is up (no database access).
- ``/readyz`` (``gateway.api.readiness``): the database answers and its Alembic revision is the
  code's head; 503 otherwise, with the reason in the JSON body.
- ``/metrics``: Prometheus text format. With ``PROMETHEUS_MULTIPROC_DIR`` set (several worker
  processes), the values of all processes are aggregated.
- Every HTTP response carries ``X-Request-ID``: the client's (when it is 1 to 128 characters
  of ``[A-Za-z0-9._:-]``) or a generated one. Every log record written while the request is
  handled carries it as ``request_id``; one access record per request is written to the
  ``gateway.access`` logger.

Metrics (besides ``gateway_db_queries_total``, defined in ``gateway.storage.db``):

- ``gateway_http_requests_total{route, method, status}`` and
  ``gateway_http_request_duration_seconds{route, method}`` for every request. ``route`` is one
  of the gateway's paths, ``/static`` or ``other``, so unknown URLs cannot grow the label set.
- ``gateway_graphql_operations_total{operation, type, outcome}`` and
  ``gateway_graphql_operation_duration_seconds{operation, type}`` for every GraphQL operation
  that reached execution (parse and validation included). ``operation`` is the operation name
  (``anonymous`` without one, ``invalid`` for a malformed one). Names are bounded: secret-key
  callers add up to ``MAX_OPERATION_NAMES`` distinct ones, customer sessions up to
  ``MAX_CUSTOMER_OPERATION_NAMES`` of their own, unauthenticated callers none; any other name
  counts as ``other`` (``_OperationNames``). ``outcome`` is ``ok`` or the worst error class:
  ``internal_error``, ``unauthenticated``, ``forbidden``, ``rate_limited`` (a request refused
  for the usage events it asked for), ``request_error`` (parse, validation, bad input).
  Requests refused before execution (no valid credentials: HTTP 401) appear only in the HTTP
  metrics.
- ``gateway_usage_events_total{result}``: usage event results: ``recorded``, ``replayed``, or
  the error code (``insufficient_balance``, ``idempotency_conflict``, ...).
"""

from __future__ import annotations

import collections
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Iterable, Iterator

from graphql import GraphQLError
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from strawberry.extensions import SchemaExtension

from gateway.api.graphql_errors import error_code
from gateway.api.metric_labels import Children as _Children
from gateway.api.readiness import readyz
from gateway.billing.usage import UsageResult
from gateway.errors import UserError
from gateway.logs import ACCESS_LOGGER
from gateway.logs import request_id as _request_id

REQUEST_ID_HEADER = "X-Request-ID"
MAX_OPERATION_NAMES = 200
MAX_CUSTOMER_OPERATION_NAMES = 50
KNOWN_ROUTES = frozenset({"/graphql", "/healthz", "/readyz", "/metrics"})

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_OPERATION_NAME = re.compile(r"[_A-Za-z][_0-9A-Za-z]{0,99}")
# fmt: off
_LATENCY_BUCKETS = (
    0.002, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0,
)
# fmt: on

HTTP_REQUESTS = Counter(
    "gateway_http_requests_total",
    "HTTP requests by route, method and status code",
    ["route", "method", "status"],
)
HTTP_LATENCY = Histogram(
    "gateway_http_request_duration_seconds",
    "HTTP request latency (until the response ends)",
    ["route", "method"],
    buckets=_LATENCY_BUCKETS,
)
GRAPHQL_OPERATIONS = Counter(
    "gateway_graphql_operations_total",
    "GraphQL operations by operation name, type and outcome",
    ["operation", "type", "outcome"],
)
GRAPHQL_LATENCY = Histogram(
    "gateway_graphql_operation_duration_seconds",
    "GraphQL operation latency (parse, validation and execution)",
    ["operation", "type"],
    buckets=_LATENCY_BUCKETS,
)
USAGE_EVENTS = Counter(
    "gateway_usage_events_total",
    "Usage event results: recorded, replayed (idempotent repeat, nothing charged) or an error",
    ["result"],
)

access_logger = logging.getLogger(ACCESS_LOGGER)


_http_requests = _Children(HTTP_REQUESTS)
_http_latency = _Children(HTTP_LATENCY)
_graphql_operations = _Children(GRAPHQL_OPERATIONS)
_graphql_latency = _Children(GRAPHQL_LATENCY)
_usage_events = _Children(USAGE_EVENTS)


def current_request_id() -> str | None:
    return _request_id.get()


# --- Request ids, HTTP metrics and the access log -------------------------------------------


def _route_label(path: str) -> str:
    if path in KNOWN_ROUTES:
        return path
    if path.startswith("/static/"):
        return "/static"
    return "other"


def _incoming_request_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            text = value.decode("latin-1")
            return text if _REQUEST_ID.fullmatch(text) else None
    return None


class RequestRecord:
    """One HTTP request's id (set for the log records written meanwhile), HTTP metrics and
    access log record: created when the request arrives, ``finish``-ed once it is answered."""

    __slots__ = ("request_id", "scope", "started", "token")

    def __init__(self, scope: Scope) -> None:
        self.scope = scope
        self.request_id = _incoming_request_id(scope) or uuid.uuid4().hex
        self.token = _request_id.set(self.request_id)
        self.started = time.perf_counter()

    def finish(self, status: int) -> None:
        scope = self.scope
        elapsed = time.perf_counter() - self.started
        method = scope.get("method", "")
        route = _route_label(scope.get("path", ""))
        _http_requests(route, method, str(status)).inc()
        _http_latency(route, method).observe(elapsed)
        access_logger.info(
            "%s %s %d",
            method,
            scope.get("path", ""),
            status,
            extra={
                "method": method,
                "path": scope.get("path", ""),
                "status": status,
                "duration_ms": round(elapsed * 1000, 3),
            },
        )
        _request_id.reset(self.token)


class ObservabilityMiddleware:
    """Pure ASGI middleware: request id, HTTP metrics and one access log record per request
    (for every path but /graphql, which ``gateway.api.endpoint`` records itself)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        record = RequestRecord(scope)
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = record.request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            record.finish(status)


# --- GraphQL operation metrics --------------------------------------------------------------


class _OperationNames:
    """Operation names come from clients: cap how many distinct ones become label values, and
    who may add one. Secret-key callers (the operator's own backends) add names up to
    ``limit``; customer sessions (end users' tokens) up to ``customer_limit`` of their own, so
    a customer sending junk names cannot use up the names of the backends; unauthenticated
    callers add none (their operations are labelled with a name only if it is already known,
    else ``other``)."""

    def __init__(self, limit: int, customer_limit: int) -> None:
        self.limits = {"secret_key": limit, "customer": customer_limit}
        self.pools: dict[str, set[str]] = {"secret_key": set(), "customer": set()}
        self.lock = threading.Lock()

    @property
    def seen(self) -> set[str]:
        return self.pools["secret_key"] | self.pools["customer"]

    def label(self, name: str | None, caller_kind: str = "anonymous") -> str:
        if not name:
            return "anonymous"
        if not _OPERATION_NAME.fullmatch(name):
            return "invalid"
        if name in self.pools["secret_key"] or name in self.pools["customer"]:
            return name
        pool = self.pools.get(caller_kind)
        if pool is None:
            return "other"
        with self.lock:
            if len(pool) >= self.limits[caller_kind]:
                return "other"
            pool.add(name)
        return name


operation_names = _OperationNames(MAX_OPERATION_NAMES, MAX_CUSTOMER_OPERATION_NAMES)

_OUTCOMES = {
    "INTERNAL_SERVER_ERROR": "internal_error",
    "UNAUTHENTICATED": "unauthenticated",
    "FORBIDDEN": "forbidden",
    "GRAPHQL_PARSE_FAILED": "request_error",
    "GRAPHQL_VALIDATION_FAILED": "request_error",
    "BAD_USER_INPUT": "request_error",
    "RATE_LIMITED": "rate_limited",
    "SERVICE_UNAVAILABLE": "unavailable",
}
_OUTCOME_RANK = (
    "internal_error",
    "unavailable",
    "unauthenticated",
    "forbidden",
    "rate_limited",
    "request_error",
)


def _outcome(errors: list[GraphQLError], executing: bool) -> str:
    if not errors:
        return "ok"
    outcomes: set[str] = set()
    for error in errors:
        code = (error.extensions or {}).get("code") or error_code(error, executing=executing)
        outcomes.add(_OUTCOMES.get(str(code), "internal_error"))
    return next(o for o in _OUTCOME_RANK if o in outcomes)


class GraphQLMetrics(SchemaExtension):
    """Counts and times every operation by name, type and outcome."""

    def on_operation(self) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - started
            ctx = self.execution_context
            try:
                operation_type = ctx.operation_type.value
                name = ctx.operation_name
            except Exception:  # no document, or an operation name it does not define
                operation_type, name = "unknown", None
            caller = getattr(ctx.context, "caller", None)
            result = ctx.result
            errors = list(result.errors or []) if result is not None else []
            if result is None and ctx.pre_execution_errors:
                errors = list(ctx.pre_execution_errors)
            record_operation(
                name,
                getattr(caller, "kind", "anonymous"),
                operation_type,
                errors,
                executing=result is not None and ctx.pre_execution_errors is None,
                elapsed=elapsed,
            )


def record_operation(
    name: str | None,
    caller_kind: str,
    operation_type: str,
    errors: list[GraphQLError],
    *,
    executing: bool,
    elapsed: float,
) -> None:
    """Count and time one operation (GraphQLMetrics, and gateway.api.compiled_lane)."""
    label = operation_names.label(name, caller_kind)
    _graphql_operations(label, operation_type, _outcome(errors, executing)).inc()
    _graphql_latency(label, operation_type).observe(elapsed)


def _usage_label(result: UsageResult) -> str:
    if isinstance(result, UserError):
        return result.code.value.lower()
    return "replayed" if result.replayed else "recorded"


def count_usage_results(results: Iterable[UsageResult]) -> None:
    """Count usage event results: one increment per outcome, however many events."""
    for label, n in collections.Counter(_usage_label(r) for r in results).items():
        _usage_events(label).inc(n)


# --- /metrics and /readyz -------------------------------------------------------------------


def metrics_registry() -> CollectorRegistry:
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return REGISTRY
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return registry


async def metrics(_request: Request) -> Response:
    return Response(generate_latest(metrics_registry()), media_type=CONTENT_TYPE_LATEST)


def install(app: Starlette) -> None:
    """Add the middleware and the /metrics and /readyz routes to the app."""
    app.add_middleware(ObservabilityMiddleware)
    app.add_route("/metrics", metrics, methods=["GET"], include_in_schema=False)
    app.add_route("/readyz", readyz, methods=["GET"], include_in_schema=False)
