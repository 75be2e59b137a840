"""The FastAPI application serving the GraphQL schema at /graphql."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from strawberry.extensions import (
    MaxAliasesLimiter,
    MaxTokensLimiter,
    ParserCache,
    QueryDepthLimiter,
    ValidationCache,
)
from strawberry.extensions.disable_introspection import DisableIntrospection
from strawberry.fastapi import GraphQLRouter

from gateway.auth import AuthenticationError, authenticate
from gateway.catalog import CatalogCache
from gateway.context import Context, Services
from gateway.db import Database
from gateway.graphql_errors import GatewayErrors
from gateway.settings import Settings
from schema import build_schema

logger = logging.getLogger(__name__)


class _Unauthenticated(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def graphql_extensions(settings: Settings) -> list[Any]:
    # The caches are shared by all requests: one instance, handed out by the factory.
    parser_cache = ParserCache(maxsize=1024)
    validation_cache = ValidationCache(maxsize=1024)
    extensions: list[Any] = [
        GatewayErrors,
        lambda: MaxTokensLimiter(max_token_count=settings.gateway_max_tokens),
        lambda: parser_cache,
        lambda: QueryDepthLimiter(max_depth=settings.gateway_max_depth),
        lambda: MaxAliasesLimiter(max_alias_count=settings.gateway_max_aliases),
        lambda: validation_cache,
    ]
    if not settings.gateway_introspection:
        extensions.append(DisableIntrospection)
    return extensions


class GatewayRouter(GraphQLRouter[Context, None]):
    """The router, with the sub-response kept per request and fast JSON encoding."""

    async def get_sub_response(self, request: Request) -> Response:  # type: ignore[override]
        response: Response = request.state.sub_response
        return response

    def encode_json(self, data: object) -> bytes:  # type: ignore[override]
        return orjson.dumps(data)


def create_app(settings: Settings, database_url: str) -> FastAPI:
    """The app for one database. Migrations are applied by the caller before it starts."""
    services_holder: dict[str, Services] = {}

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        db = Database(
            database_url,
            min_size=settings.gateway_pool_min_size,
            max_size=settings.gateway_pool_max_size,
        )
        await db.connect()
        catalogs = CatalogCache(db, settings.gateway_catalog_cache_seconds)
        await catalogs.listen()
        services_holder["services"] = Services(
            settings=settings, db=db, catalogs=catalogs, token_secret=settings.token_secret()
        )
        _app.state.services = services_holder["services"]
        try:
            yield
        finally:
            await catalogs.stop()
            await db.close()

    async def get_context(request: Request, response: Response) -> Context:
        services = services_holder["services"]
        request.state.sub_response = response
        try:
            caller = await authenticate(
                services.db, services.token_secret, request.headers.get("authorization")
            )
        except AuthenticationError as exc:
            raise _Unauthenticated(str(exc)) from exc
        return Context(services, caller)

    app = FastAPI(title="Billing gateway", lifespan=lifespan)
    router = GatewayRouter(
        build_schema(graphql_extensions(settings)),
        context_getter=get_context,
        graphql_ide="graphiql" if settings.gateway_graphiql else None,
        allow_queries_via_get=True,
    )
    app.include_router(router, prefix="/graphql")

    @app.exception_handler(_Unauthenticated)
    async def _unauthenticated(_request: Request, exc: _Unauthenticated) -> JSONResponse:
        body: dict[str, Any] = {
            "data": None,
            "errors": [{"message": exc.message, "extensions": {"code": "UNAUTHENTICATED"}}],
        }
        return JSONResponse(body, status_code=401, headers={"WWW-Authenticate": "Bearer"})

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
