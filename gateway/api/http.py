"""The HTTP side of /graphql: size and rate limits, content negotiation, JSON error bodies.

Every failure is answered with a JSON body in the GraphQL error shape,
``{"errors": [{"message": ..., "extensions": {"code": ...}}]}`` (401 answers also carry
``"data": null``), never plain text or HTML; only the GraphiQL page itself is HTML.

Request body size (``GATEWAY_MAX_BODY_BYTES``)
    ``BodyLimitMiddleware`` (pure ASGI, in front of everything) refuses a body larger than the
    limit with HTTP 413 ``PAYLOAD_TOO_LARGE``: at once when ``Content-Length`` says so, else
    as soon as the bytes received exceed it (chunked bodies). A body of exactly the limit is
    accepted. The body is buffered (at most the limit) and handed on unchanged.

Rate limiting (``GATEWAY_RATE_LIMIT_PER_MINUTE``, 0 disables)
    A token bucket per caller, held in this process's memory: capacity = the setting, refilled
    continuously at setting/60 tokens per second. A request is charged by its work: one token
    when it arrives (before its document is read), and, for a mutation that records usage
    events, one per event (``UsageEventBudget`` counts them from the document and variables
    before anything executes and charges the rest: a request of N events costs N tokens, the
    same as N requests of one event). The caller
    is the secret key (``key:<key id>``), the customer of a session token
    (``customer:<customer id>``; all of its tokens share one bucket), or the client address for
    anonymous requests and failed authentications (``ip:<address>``). The address is the TCP
    peer's: ``X-Forwarded-For`` is believed only from the proxies ``GATEWAY_TRUSTED_PROXIES``
    names (addresses or CIDR networks; none by default, so rotating the header buys a caller
    nothing). A refused request gets HTTP 429 ``RATE_LIMITED`` with ``Retry-After`` (whole
    seconds until enough tokens are available) and ``extensions.retryAfter``; a request
    refused for its events has executed nothing.
    The buckets are per process and not shared: with N gateway processes (instances or
    workers) behind a load balancer, a caller's effective limit is N x the setting. Idle
    buckets are dropped once the table holds ``max_keys`` callers.

Content negotiation (GraphQL over HTTP)
    Requests are ``POST`` with ``Content-Type: application/json`` (anything else: 415
    ``UNSUPPORTED_MEDIA_TYPE``) or ``GET`` with the query in the URL, for queries only (a
    mutation over GET: 405 ``METHOD_NOT_ALLOWED`` with ``Allow: POST``). The response's media
    type follows ``Accept``: ``application/graphql-response+json`` or ``application/json``,
    the highest ``q`` winning (an exact type beats a wildcard, then the first listed); no
    ``Accept``, ``*/*`` or ``application/*`` give ``application/json``; an ``Accept`` naming
    neither gives 406 ``NOT_ACCEPTABLE``. A body that is not JSON (or nested deeper than the
    JSON decoder's limit) is 400 ``BAD_REQUEST``. A GraphQL request error (the document does
    not parse or validate, or the variables do not fit) is HTTP 200 for ``application/json``
    (the legacy behaviour clients expect, with ``"data": null``) and 400 for
    ``application/graphql-response+json``, whose body then has no ``data`` entry at all.

Persisted documents (APQ, trusted documents) are resolved per request before execution:
``gateway.api.persisted``.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from typing import Any

import orjson
from cross_web import HTTPException
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from graphql import GraphQLError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect
from strawberry.asgi import ASGIWebSocketAdapter
from strawberry.exceptions import ConnectionRejectionError
from strawberry.fastapi import GraphQLRouter
from strawberry.http import GraphQLRequestData
from strawberry.http.exceptions import WebSocketDisconnected
from strawberry.http.parse_content_type import parse_content_type
from strawberry.schema.exceptions import InvalidOperationTypeError
from strawberry.types import ExecutionResult
from strawberry.types.unset import UNSET, UnsetType

from gateway.api.context import Context
from gateway.api.graphiql import GRAPHQL_PARAMS
from gateway.api.media import GRAPHQL_RESPONSE_MEDIA, JSON_MEDIA, error_response, negotiate
from gateway.api.persisted import (
    PersistedDocumentError,
    PersistedDocumentRefused,
    PersistedDocuments,
    document_id_in,
    with_document_id,
)
from gateway.api.rate_limit import RateLimited, RateLimiter
from gateway.callers.auth import AuthenticationError
from gateway.live.sessions import Session

logger = logging.getLogger("gateway.api.http")
__all__ = ["GRAPHQL_RESPONSE_MEDIA", "JSON_MEDIA", "GatewayRouter", "install", "negotiate"]


class GatewayHTTPError(HTTPException):
    """A refusal of the HTTP layer, answered by ``GatewayRouter`` with a JSON error body."""

    def __init__(
        self, status_code: int, reason: str, *, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(status_code, reason)
        self.headers = dict(headers or {})


class Unauthenticated(Exception):
    """Credentials were sent but are not valid (HTTP 401)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def rate_limited_response(accept: str | None, exc: RateLimited) -> Response:
    return error_response(
        accept,
        429,
        f"{exc}: retry in {exc.retry_after} s",
        headers={"Retry-After": str(exc.retry_after)},
        retryAfter=exc.retry_after,
    )


# ------------------------------------------------------------------ body size


class BodyLimitMiddleware:
    """Refuses HTTP request bodies larger than ``max_bytes`` with 413 (see the module docstring)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.max_bytes <= 0:
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        accept = headers.get("accept")
        declared = headers.get("content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                await error_response(accept, 400, "Content-Length is not a number")(
                    scope, receive, send
                )
                return
            if int(declared) > self.max_bytes:
                await self._too_large(accept, scope, receive, send)
                return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._too_large(accept, scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(
        self, accept: str | None, scope: Scope, receive: Receive, send: Send
    ) -> None:
        response = error_response(
            accept,
            413,
            f"the request body is larger than {self.max_bytes} bytes",
            maxBytes=self.max_bytes,
        )
        await response(scope, receive, send)


# ------------------------------------------------------------------ the GraphQL router


class TextFrames(ASGIWebSocketAdapter):
    """graphql-transport-ws messages go out as text frames, as the protocol says (browsers
    hand binary frames to the page as Blobs): ``encode_json`` gives bytes for HTTP, which
    strawberry's adapter would send as binary."""

    async def send_json(self, message: Mapping[str, object]) -> None:
        try:
            await self.ws.send_text(orjson.dumps(message).decode())
        except WebSocketDisconnect as exc:
            raise WebSocketDisconnected from exc


class GatewayRouter(GraphQLRouter[Context, None]):
    """Strawberry's router with the negotiation, status codes and JSON error bodies above."""

    websocket_adapter_class = TextFrames

    def __init__(
        self, *args: Any, persisted: PersistedDocuments | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.persisted = persisted  # APQ and trusted documents: gateway.api.persisted

    async def on_ws_connect(self, context: Context) -> UnsetType | dict[str, object] | None:
        """graphql-transport-ws ``connection_init``: its payload's ``Authorization`` (a secret
        key or a customer session token) is the connection's credential; without a valid one
        the connection is closed (4403). Access then follows the queries' rules."""
        params: dict[str, object] = (
            context.connection_params if isinstance(context.connection_params, dict) else {}
        )
        authorization = params.get("Authorization", params.get("authorization"))
        if not isinstance(authorization, str) or not authorization:
            raise ConnectionRejectionError({"message": "connection_init needs Authorization"})
        services = context.services
        try:
            session = await Session.open(
                services.db, services.token_secret, authorization, services.credentials
            )
        except AuthenticationError as exc:
            raise ConnectionRejectionError({"message": str(exc)}) from exc
        context.live_session = session
        context.caller = session.caller
        return UnsetType()  # connection_ack without a payload

    def should_render_graphql_ide(self, request: Any) -> bool:
        # The IDE's rule (gateway.api.graphiql.wants_page), persisted documents included.
        params = request.query_params
        return super().should_render_graphql_ide(request) and not any(
            name in params for name in GRAPHQL_PARAMS
        )

    async def get_sub_response(self, request: Request) -> Response:
        # Kept per request (the base class keeps one on the router, shared by all requests).
        response: Response = request.state.sub_response
        return response

    def encode_json(self, data: object) -> bytes:
        return orjson.dumps(data)

    def decode_json(self, data: str | bytes) -> object:
        # orjson raises a json.JSONDecodeError subclass, also for nesting deeper than 1024.
        return orjson.loads(data)

    async def parse_http_body(self, request: Any) -> GraphQLRequestData | list[GraphQLRequestData]:
        try:
            data = await super().parse_http_body(request)
        except AttributeError as exc:  # strawberry calls .get() on whatever JSON it decoded
            raise GatewayHTTPError(400, "the request body must be a JSON object") from exc
        for item in data if isinstance(data, list) else [data]:
            if not isinstance(item.operation_name, str | None):
                raise GatewayHTTPError(400, "operationName must be a string or null")
        if isinstance(data, GraphQLRequestData) and data.query is None and not data.extensions:
            # {"documentId": ...} (trusted documents): looked for only when there is no query.
            document_id = (
                request.query_params.get("documentId")
                if request.method == "GET"
                else document_id_in(await request.get_body())
            )
            if document_id is not None:
                try:
                    return with_document_id(data, document_id)
                except PersistedDocumentRefused as exc:
                    raise GatewayHTTPError(400, str(exc)) from exc
        return data

    async def execute_single(self, *args: Any, **kwargs: Any) -> Any:
        context: Context = kwargs["context"]
        if self.persisted is not None:
            try:
                kwargs["request_data"] = self.persisted.resolve(
                    kwargs["request_data"], free_documents=context.caller.is_secret_key
                )
            except PersistedDocumentRefused as exc:
                raise GatewayHTTPError(400, str(exc)) from exc
            except PersistedDocumentError as exc:
                context.request_error = True  # nothing ran: a GraphQL request error
                return ExecutionResult(
                    data=None, errors=[GraphQLError(exc.message, extensions={"code": exc.code})]
                )
        try:
            return await super().execute_single(*args, **kwargs)
        except HTTPException as exc:
            if isinstance(exc.__cause__, InvalidOperationTypeError) and (
                exc.__cause__.operation_type.value != "query"
            ):
                raise GatewayHTTPError(
                    405,
                    f"{exc.reason}: GET serves queries only, use POST",
                    headers={"Allow": "POST"},
                ) from exc
            raise

    async def run(  # type: ignore[override]
        self,
        request: Request | WebSocket,
        context: Context = UNSET,
        root_value: None = UNSET,
    ) -> Response | WebSocket:
        if isinstance(request, WebSocket):
            return await super().run(request, context, root_value)
        accept = request.headers.get("accept")
        media = negotiate(accept)
        try:
            if request.method == "GET" and self.should_render_graphql_ide(
                self.request_adapter_class(request)
            ):
                media = JSON_MEDIA  # GraphiQL, or a JSON 404 when it is disabled
            elif media is None:
                raise GatewayHTTPError(
                    406, f"Accept must allow {GRAPHQL_RESPONSE_MEDIA} or {JSON_MEDIA}"
                )
            elif request.method == "POST":
                content_type, _ = parse_content_type(request.headers.get("content-type", ""))
                if content_type != JSON_MEDIA:
                    raise GatewayHTTPError(415, f"POST a body of Content-Type {JSON_MEDIA}")
            response = await super().run(request, context, root_value)
        except HTTPException as exc:
            return error_response(
                media or JSON_MEDIA,
                exc.status_code,
                exc.reason,
                headers=getattr(exc, "headers", None),
            )
        if context is not UNSET and context.rate_limited is not None:
            # Refused for the usage events it would record (UsageEventBudget): nothing ran.
            return rate_limited_response(media, context.rate_limited)
        if response.media_type == JSON_MEDIA and media != JSON_MEDIA:
            response.headers["content-type"] = media
            if context is not UNSET and context.request_error and response.status_code == 200:
                # GraphQL over HTTP: a request error (the operation never ran) is a 400 with
                # no "data" entry at all for this media type.
                response.status_code = 400
                body = orjson.loads(response.body)
                if isinstance(body, dict) and body.pop("data", "absent") is None:
                    response.body = orjson.dumps(body)
                    response.headers["content-length"] = str(len(response.body))
        return response


# ------------------------------------------------------------------ wiring


def install(app: FastAPI, *, max_body_bytes: int, rate_limit_per_minute: int) -> RateLimiter:
    """Add the body limit and the JSON error handlers to ``app``; returns its rate limiter."""
    app.add_middleware(BodyLimitMiddleware, max_bytes=max_body_bytes)
    limiter = RateLimiter(rate_limit_per_minute)
    app.state.rate_limiter = limiter

    @app.exception_handler(Unauthenticated)
    async def _unauthenticated(request: Request, exc: Unauthenticated) -> Response:
        return error_response(
            request.headers.get("accept"),
            401,
            exc.message,
            headers={"WWW-Authenticate": "Bearer"},
            with_data=True,
        )

    @app.exception_handler(RateLimited)
    async def _rate_limited(request: Request, exc: RateLimited) -> Response:
        return rate_limited_response(request.headers.get("accept"), exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return error_response(
            request.headers.get("accept"), exc.status_code, str(exc.detail), headers=exc.headers
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(request: Request, exc: RequestValidationError) -> Response:
        return error_response(request.headers.get("accept"), 400, "malformed request")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        error_id = uuid.uuid4().hex
        logger.error(
            "unexpected error %s in %s %s",
            error_id,
            request.method,
            request.url.path,
            exc_info=exc,
            extra={"error_id": error_id},
        )
        return error_response(
            request.headers.get("accept"),
            500,
            f"Internal server error (error id {error_id})",
            errorId=error_id,
        )

    return limiter
