"""HTTP 503 answers: the database cannot serve a request, or the shutdown grace is over.

Both are answered like every other refusal (``gateway.api.http``): a JSON body in the GraphQL
error shape, here with ``extensions.code`` ``SERVICE_UNAVAILABLE``, ``extensions.retryAfter`` and
a ``Retry-After`` header, and logged once on one line (no stack trace: neither is a bug).

- ``DatabaseUnavailable`` raised outside GraphQL execution (authentication runs before it)
  gets its own exception handler. Starlette's catch-all ``Exception`` handler answers and then
  re-raises, which makes the server log the error a second time and drop the keep-alive
  connection; a handler for the class itself answers and the connection stays open. Inside
  GraphQL execution the same errors become ``SERVICE_UNAVAILABLE`` errors
  (``gateway.api.graphql_errors``).
- ``ShutdownCutoff``: when the graceful shutdown's grace is over, uvicorn cancels the
  requests still running; one that has not started its response gets a JSON 503 (instead of
  uvicorn's plain-text 500). Its database statement, if any, is cancelled and rolled back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.api.graphql_errors import unavailable_message
from gateway.api.media import error_response
from gateway.storage.unavailable import SERVER_UNAVAILABLE_ERRORS, DatabaseUnavailable, unavailable

logger = logging.getLogger("gateway.errors")
Handler = Callable[[Request, Exception], Awaitable[Response]]
CODE = "SERVICE_UNAVAILABLE"


def unavailable_response(accept: str | None, reason: str, retry_after: int) -> Response:
    return error_response(
        accept,
        503,
        unavailable_message(reason, retry_after),
        code=CODE,
        headers={"Retry-After": str(retry_after)},
        retryAfter=retry_after,
    )


class ShutdownCutoff:
    """Pure ASGI middleware: a request cancelled before its response started gets a JSON 503."""

    def __init__(self, app: ASGIApp, retry_after: int) -> None:
        self.app = app
        self.retry_after = retry_after

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if started or task is None:
                raise
            # The server cancels the requests still running when its shutdown grace is over
            # (that is the only cancellation of a request task): answer it, then let the task
            # end normally, the cancellation handled.
            task.uncancel()
            await shutdown_response(scope, self.retry_after)(scope, receive, send)


def shutdown_response(scope: Scope, retry_after: int) -> Response:
    """The answer to a request cancelled by the end of the shutdown grace (logged once)."""
    reason = "the server is shutting down"
    logger.warning(
        "service unavailable in %s %s: %s",
        scope.get("method", ""),
        scope.get("path", ""),
        reason,
        extra={"reason": reason},
    )
    accept = next(
        (v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"accept"), None
    )
    response = unavailable_response(accept, reason, retry_after)
    response.headers["Connection"] = "close"
    return response


def unavailable_handlers(retry_after: int) -> dict[type[Exception], Handler]:
    """The exception handlers answering 503 for the database's unavailability."""

    async def _unavailable(request: Request, exc: Exception) -> Response:
        error = exc if isinstance(exc, DatabaseUnavailable) else unavailable(exc)
        logger.warning(
            "service unavailable in %s %s: %s",
            request.method,
            request.url.path,
            error.reason,
            extra={"reason": error.reason},
        )
        return unavailable_response(request.headers.get("accept"), error.reason, retry_after)

    error_classes: tuple[type[Exception], ...] = (DatabaseUnavailable, *SERVER_UNAVAILABLE_ERRORS)
    return dict.fromkeys(error_classes, _unavailable)


def install(app: FastAPI, *, retry_after: int) -> None:
    """The 503 handlers and the shutdown middleware (add before the observability middleware,
    so that the access log records the 503)."""
    app.add_middleware(ShutdownCutoff, retry_after=retry_after)
    for error_class, handler in unavailable_handlers(retry_after).items():
        app.add_exception_handler(error_class, handler)
