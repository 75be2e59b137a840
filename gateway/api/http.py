"""The HTTP side of /graphql: size and rate limits, content negotiation, JSON error bodies.

Every failure is answered with a JSON body in the GraphQL error shape,
``{"errors": [{"message": ..., "extensions": {"code": ...}}]}`` (401 answers also carry
``"data": null``), never plain text or HTML; only the GraphiQL page itself is HTML.

Request body size (``GATEWAY_MAX_BODY_BYTES``)
    ``read_body`` refuses a body larger than the limit with HTTP 413 ``PAYLOAD_TOO_LARGE``,
    before anything else reads the request (for /graphql ``gateway.api.endpoint`` calls it,
    for every other path ``BodyLimitMiddleware``, pure ASGI): at once when ``Content-Length``
    says so, else as soon as the bytes received exceed it (chunked bodies). A body of exactly
    the limit is accepted. The body is buffered (at most the limit) and handed on unchanged.

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
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.api.graphql_view import rate_limited_response
from gateway.api.media import GRAPHQL_RESPONSE_MEDIA, JSON_MEDIA, error_response, negotiate
from gateway.api.rate_limit import RateLimited, RateLimiter

logger = logging.getLogger("gateway.api.http")
__all__ = ["GRAPHQL_RESPONSE_MEDIA", "JSON_MEDIA", "install", "negotiate"]

Handler = Callable[[Request, Exception], Awaitable[Response]]


class Unauthenticated(Exception):
    """Credentials were sent but are not valid (HTTP 401)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# ------------------------------------------------------------------ body size


async def read_body(
    scope: Scope, receive: Receive, max_bytes: int, accept: str | None
) -> bytes | Response | None:
    """The request body, at most ``max_bytes`` (0: no limit), or the 400/413 refusal to
    answer instead, or None when the client went away before sending all of it."""
    if max_bytes > 0:
        declared = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                declared = value.decode("latin-1")
        if declared is not None:
            if not declared.strip().isdigit():
                return error_response(accept, 400, "Content-Length is not a number")
            if int(declared) > max_bytes:
                return _too_large(accept, max_bytes)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":  # the client went away
            return None
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if 0 < max_bytes < size:
            return _too_large(accept, max_bytes)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _too_large(accept: str | None, max_bytes: int) -> Response:
    return error_response(
        accept,
        413,
        f"the request body is larger than {max_bytes} bytes",
        maxBytes=max_bytes,
    )


def replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands on ``body`` (already read) first, then the client's messages."""
    replayed = False

    async def replayed_receive() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed_receive


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
        body = await read_body(scope, receive, self.max_bytes, accept)
        if body is None:
            return
        if isinstance(body, Response):
            await body(scope, receive, send)
            return
        await self.app(scope, replay(body, receive), send)


# ------------------------------------------------------------------ error answers


async def _unauthenticated(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Unauthenticated)
    return error_response(
        request.headers.get("accept"),
        401,
        exc.message,
        headers={"WWW-Authenticate": "Bearer"},
        with_data=True,
    )


async def _rate_limited(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RateLimited)
    return rate_limited_response(request.headers.get("accept"), exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    return error_response(
        request.headers.get("accept"), exc.status_code, str(exc.detail), headers=exc.headers
    )


async def _invalid_request(request: Request, exc: Exception) -> Response:
    return error_response(request.headers.get("accept"), 400, "malformed request")


async def unexpected_error(request: Request, exc: Exception) -> Response:
    """A bug: logged with its stack trace under an error id, which the 500 answer names."""
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


ERROR_HANDLERS: dict[type[Exception], Handler] = {
    Unauthenticated: _unauthenticated,
    RateLimited: _rate_limited,
    StarletteHTTPException: _http_error,
    RequestValidationError: _invalid_request,
}


# ------------------------------------------------------------------ wiring


def install(app: FastAPI, *, max_body_bytes: int, rate_limit_per_minute: int) -> RateLimiter:
    """Add the body limit and the JSON error handlers to ``app``; returns its rate limiter.
    (/graphql itself is answered by ``gateway.api.endpoint``, with the same handlers.)"""
    app.add_middleware(BodyLimitMiddleware, max_bytes=max_body_bytes)
    limiter = RateLimiter(rate_limit_per_minute)
    app.state.rate_limiter = limiter
    for error_class, handler in ERROR_HANDLERS.items():
        app.add_exception_handler(error_class, handler)
    app.add_exception_handler(Exception, unexpected_error)
    return limiter
