"""The application: GraphQL at /graphql (gateway.api.endpoint), FastAPI for the rest."""

from __future__ import annotations

import functools
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from fastapi import FastAPI, Request
from starlette.middleware.cors import CORSMiddleware
from starlette.websockets import WebSocket
from strawberry.extensions import MaxTokensLimiter
from strawberry.extensions.disable_introspection import DisableIntrospection
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from gateway.api import graphql_fast, observability, tracing
from gateway.api.compiled_lane import CompiledLane
from gateway.api.context import Context, Services
from gateway.api.endpoint import GraphQLEndpoint, slash_route
from gateway.api.event_budget import UsageEventBudget
from gateway.api.examples import example_routes
from gateway.api.graphiql import graphiql_routes
from gateway.api.graphql_errors import GatewayErrors, HideSuggestions
from gateway.api.graphql_limits import (
    BoundedParserCache,
    BoundedValidationCache,
    DocumentLimits,
    DocumentPolicy,
    Limits,
)
from gateway.api.graphql_view import GatewayView
from gateway.api.http import Unauthenticated
from gateway.api.http import install as install_http
from gateway.api.observability import GraphQLMetrics
from gateway.api.persisted import persisted_documents
from gateway.api.sdl import sdl_route
from gateway.api.unavailable import install as install_unavailable
from gateway.billing.catalog import CatalogCache
from gateway.callers.auth import ANONYMOUS, AuthenticationError, CredentialCache, authenticate
from gateway.callers.authz import OperationGate
from gateway.live.hub import Hub
from gateway.live.reads import SharedReads
from gateway.reservations.sweep import Sweeper
from gateway.settings import Settings
from gateway.storage.db import database_from_settings, warn_without_server_timeouts
from gateway.storage.listeners import Listeners
from gateway.webhooks.worker import DeliveryWorker
from schema import build_schema

logger = logging.getLogger(__name__)

GC_YOUNG_THRESHOLD = 10_000  # allocations between collections of the youngest generation


def graphql_extensions(settings: Settings) -> list[Any]:
    # The caches are shared by all requests: one instance, handed out by the factory.
    parser_cache = BoundedParserCache(maxsize=1024)
    validation_cache = BoundedValidationCache(maxsize=1024)
    policy = DocumentPolicy(
        Limits(
            max_depth=settings.gateway_max_depth,
            max_aliases=settings.gateway_max_aliases,
            max_fragment_spreads=settings.gateway_max_fragment_spreads,
            max_expanded_selections=settings.gateway_max_expanded_selections,
        )
    )
    extensions: list[Any] = [
        GatewayErrors,
        GraphQLMetrics,
        lambda: MaxTokensLimiter(max_token_count=settings.gateway_max_tokens),
        lambda: parser_cache,
        # Before the validation cache: a refused document is not validated at all. The gate
        # is linear (each fragment once); the limits make everything after them linear.
        lambda: OperationGate(introspection=settings.introspection),
        lambda: DocumentLimits(policy),
        lambda: validation_cache,
        lambda: UsageEventBudget(settings.gateway_max_batch_size),
    ]
    if not settings.introspection:
        extensions.append(DisableIntrospection)
    if not settings.field_suggestions:
        extensions.append(HideSuggestions)
    extensions.extend(tracing.graphql_extensions(settings))  # none unless tracing is on
    return extensions


def lane_enabled(settings: Settings) -> bool:
    """Whether /graphql answers documents it has run before by the compiled lane: it runs
    none of the schema's extensions, so not while tracing adds its own."""
    return (
        settings.gateway_compiled_lane
        and settings.gateway_compiled_execution
        and graphql_fast.proven()
        and not tracing.enabled(settings)
    )


def listen_urls(settings: Settings, database_url: str) -> list[str]:
    """Where to LISTEN: GATEWAY_LISTEN_DATABASE_URLS, else the direct URL, else the pool's."""
    urls = [u.strip() for u in (settings.gateway_listen_database_urls or "").split(",")]
    return [u for u in urls if u] or [settings.gateway_direct_database_url or database_url]


def create_app(settings: Settings, database_url: str) -> FastAPI:
    """The app for one database. Migrations are applied by the caller before it starts."""
    services_holder: dict[str, Services] = {}
    hub = Hub()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        db = database_from_settings(settings, database_url)
        await db.connect()
        await warn_without_server_timeouts(db)
        catalogs = CatalogCache(db, settings.gateway_catalog_cache_seconds)
        # LISTEN on a supervised connection of its own per node (gateway.storage.listeners).
        listener = Listeners(listen_urls(settings, database_url))
        catalogs.attach(listener)
        credentials = CredentialCache(
            settings.gateway_auth_cache_size, settings.gateway_auth_cache_seconds
        )
        credentials.attach(listener)  # revocations: storage/sql/credentials.sql
        hub.attach(listener)  # balance and alert notifications for subscriptions
        await listener.start(wait=5)
        sweeper = Sweeper(db, settings.gateway_reservation_sweep_seconds)
        sweeper.start()
        services_holder["services"] = Services(
            settings=settings,
            db=db,
            catalogs=catalogs,
            credentials=credentials,
            token_secret=settings.token_secret(),
            hub=hub,
            live_reads=SharedReads(db, settings.token_secret(), credentials),
        )
        _app.state.services = services_holder["services"]
        worker = DeliveryWorker(db, settings) if settings.gateway_webhook_worker else None
        if worker is not None:
            worker.start()
        # What exists now (schema, modules, pool) lives as long as the process: keep it out of
        # the collector's full passes, which otherwise walk ~135,000 objects (~40 ms each, a
        # pause for every request in flight). bench/RESULTS.md: p99 -40%, CPU -14%.
        gc.freeze()
        # A request allocates a few thousand objects, nearly all freed by reference counting:
        # with the default threshold (700) the youngest generation was collected several times
        # per request (~4% of a worker's CPU under createUsageEvent load, issue #16).
        gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
        try:
            yield
        finally:
            await sweeper.stop()
            if worker is not None:
                await worker.stop()
            await listener.stop()
            await db.close()

    async def get_context(request: Request | WebSocket) -> Context:
        services = services_holder["services"]
        if isinstance(request, WebSocket):
            # Authenticated by connection_init (GatewayView.on_ws_connect).
            context = Context(services, ANONYMOUS)
            context.request = request
            return context
        try:
            caller = await authenticate(
                services.db,
                services.token_secret,
                request.headers.get("authorization"),
                services.credentials,
            )
        except AuthenticationError as exc:
            rate_limiter.check(request, None)  # failed attempts count against the address
            raise Unauthenticated(str(exc)) from exc
        rate_limiter.check(request, caller)
        context = Context(services, caller)
        context.charge = functools.partial(rate_limiter.check, request, caller)
        return context

    # No /docs, /redoc or /openapi.json: the API is GraphQL (its SDL is schema/schema.graphql),
    # the OpenAPI document would describe nothing real, and /docs loads its page from a CDN.
    app = FastAPI(
        title="Billing gateway", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
    )
    rate_limiter = install_http(  # body limit, rate limiter, JSON error bodies: gateway.api.http
        app,
        max_body_bytes=settings.gateway_max_body_bytes,
        rate_limit_per_minute=settings.gateway_rate_limit_per_minute,
    )
    install_unavailable(app, retry_after=settings.gateway_retry_after_seconds)  # 503 answers
    view = GatewayView(
        build_schema(
            graphql_extensions(settings),
            fast=settings.gateway_compiled_execution,
            hide_suggestions=not settings.field_suggestions,
        ),
        context_getter=get_context,
        graphql_ide=None,  # our own offline page: gateway.api.graphiql
        allow_queries_via_get=True,
        persisted=persisted_documents(settings),
        subscription_protocols=[GRAPHQL_TRANSPORT_WS_PROTOCOL],
        connection_init_wait_timeout=timedelta(
            seconds=settings.gateway_subscription_init_timeout_seconds
        ),
        max_subscriptions_per_connection=settings.gateway_max_subscriptions_per_connection,
        # Browsers apply no CORS to WebSocket handshakes: pages on the origins of
        # GATEWAY_CORS_ORIGINS may open one, same-origin pages and non-browsers always.
        allowed_origins=settings.cors_origins(),
    )
    if settings.introspection:  # the SDL says what introspection would
        app.router.routes.append(sdl_route(view.schema.as_str() + "\n"))
    if settings.graphiql:  # the page itself is answered at /graphql by the endpoint below
        app.router.routes.extend(graphiql_routes())
        app.router.routes.extend(example_routes())  # the usage page: gateway.api.examples
    app.router.routes.append(slash_route(view))
    observability.install(app)
    # /graphql itself, in one pass in front of the app's routing and the middlewares above
    # (which serve every other path): gateway.api.endpoint.
    lane = (
        CompiledLane(view, max_events=settings.gateway_max_batch_size)
        if lane_enabled(settings)
        else None
    )
    app.state.compiled_lane = lane  # for tests: what it has answered
    app.add_middleware(
        GraphQLEndpoint,
        view=view,
        context_getter=get_context,
        max_body_bytes=settings.gateway_max_body_bytes,
        retry_after=settings.gateway_retry_after_seconds,
        graphiql=settings.graphiql,
        lane=lane,
    )
    tracing.install(app, settings)  # OTEL_EXPORTER_OTLP_ENDPOINT: gateway.api.tracing
    if settings.cors_origins():
        # Last added, so outermost: a preflight is answered before the body limit, the rate
        # limiter or authentication see it. Bearer tokens only: no credentials mode, so a
        # page can never ride on cookies. Allow-Origin names the caller's origin (or *).
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins(),
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", "Accept"],
            expose_headers=["Retry-After", "X-Request-Id"],
            allow_credentials=False,
            max_age=600,
        )
    if settings.trusted_proxies():
        # The client address (rate limits of anonymous callers) from X-Forwarded-For, only
        # when the TCP peer is a named proxy; uvicorn's own handling is off (run_server).
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=settings.trusted_proxies())

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def app_from_env() -> FastAPI:
    """App factory for `uvicorn --factory` and worker processes: DATABASE_URL must be set
    (`billing-gateway serve` resolves the embedded server and migrates before forking)."""
    from gateway.settings import get_settings

    settings = get_settings()
    if not settings.database_url:
        raise RuntimeError("DATABASE_URL must be set for worker processes")
    return create_app(settings, settings.database_url)
