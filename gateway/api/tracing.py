"""OpenTelemetry tracing, off unless ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set.

When it is set, the process exports spans over OTLP/HTTP (the exporter reads the standard
``OTEL_*`` variables itself: the endpoint, ``OTEL_EXPORTER_OTLP_HEADERS``,
``OTEL_SERVICE_NAME``, ``OTEL_BSP_SCHEDULE_DELAY``, ...):

- the ASGI instrumentation: one server span per HTTP request, continuing the caller's trace
  from its ``traceparent`` header (W3C trace context);
- strawberry's OpenTelemetry extension: spans for the GraphQL operation, its parsing and
  validation, and each resolver that graphql-core runs (the compiled executor of
  ``createUsageEvent(s)``, gateway.api.graphql_fast, runs inside the operation span);
- the asyncpg instrumentation: one span per SQL statement.

Unset, nothing of OpenTelemetry is imported or installed: no middleware, no schema extension,
no patched driver methods, so tracing costs nothing when off.
"""

from __future__ import annotations

import threading
from typing import Any

from fastapi import FastAPI

from gateway.settings import Settings

_lock = threading.Lock()
_provider: Any = None


def enabled(settings: Settings) -> bool:
    return bool(settings.otel_exporter_otlp_endpoint)


def _tracer_provider() -> Any:
    """The process's tracer provider, set up once: OTLP/HTTP export in batches, and the
    asyncpg driver instrumented."""
    global _provider
    with _lock:
        if _provider is None:
            from opentelemetry import trace
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
            from opentelemetry.sdk.resources import OTELResourceDetector, Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor

            resource = Resource.create({"service.name": "billing-gateway"}).merge(
                OTELResourceDetector().detect()
            )
            provider = TracerProvider(resource=resource)
            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
            trace.set_tracer_provider(provider)
            AsyncPGInstrumentor().instrument(tracer_provider=provider)  # type: ignore[no-untyped-call]
            _provider = provider
        return _provider


def graphql_extensions(settings: Settings) -> list[Any]:
    """Strawberry's OpenTelemetry extension when tracing is on, else nothing."""
    if not enabled(settings):
        return []
    from strawberry.extensions.tracing import OpenTelemetryExtension

    _tracer_provider()
    return [OpenTelemetryExtension]


def install(app: FastAPI, settings: Settings) -> None:
    """The ASGI instrumentation as the outermost middleware, when tracing is on."""
    if not enabled(settings):
        return
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    app.add_middleware(OpenTelemetryMiddleware, tracer_provider=_tracer_provider())
