"""/graphql as a plain ASGI handler in front of the FastAPI app, which serves everything else.

Every GraphQL request used to pass FastAPI's routing and dependency injection and a stack of
middlewares, each wrapping ``send`` and catching exceptions again (about a third of a worker's
CPU under load, issue #16). ``GraphQLEndpoint`` answers /graphql itself, in one pass of plain
code that does what those layers did, in the same order:

1. the request id, HTTP metrics and access record (``observability.RequestRecord``);
2. the body size limit (``http.read_body``, 400/413 before anything else is read);
3. the GraphiQL page (``gateway.api.graphiql``) when enabled, for the requests it answers;
4. any other method than GET and POST: 405 with ``Allow: GET``, as FastAPI's router answered;
5. authentication and the rate limit (the app's context getter: 401, 429);
6. strawberry's ASGI view (``gateway.api.graphql_view``): negotiation, parsing, execution;
7. exceptions answered as the app's handlers answer them: ``http.ERROR_HANDLERS``, the 503s of
   ``gateway.api.unavailable``, else a 500 with an error id (logged with its stack trace);
8. a request cancelled by the end of the shutdown grace gets its JSON 503 (``ShutdownCutoff``).

It sits inside the middlewares that apply to every path (CORS, the proxy headers, the
OpenTelemetry server span), which stay pure ASGI middlewares of the app. WebSocket connections
to /graphql (graphql-transport-ws) go to the same view directly.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.api.compiled_lane import CompiledLane
from gateway.api.context import Context
from gateway.api.graphiql import graphiql_page, wants_page
from gateway.api.graphql_view import GatewayView
from gateway.api.http import ERROR_HANDLERS, Handler, read_body, replay, unexpected_error
from gateway.api.media import error_response
from gateway.api.observability import REQUEST_ID_HEADER, RequestRecord
from gateway.api.unavailable import shutdown_response, unavailable_handlers

GRAPHQL_PATH = "/graphql"
GRAPHQL_METHODS = ("GET", "POST")


def route_path(scope: Scope) -> str:
    """The path without the app's mount point (``root_path``), as Starlette routes it."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and path != root and path[len(root)] == "/":
        return path[len(root) :]
    return path


def slash_route(view: GatewayView) -> Route:
    """A route of the FastAPI app at /graphql, so that its router still redirects /graphql/
    to /graphql (307). Requests for /graphql itself never reach it: the endpoint answers them."""
    return Route(GRAPHQL_PATH, endpoint=view, include_in_schema=False)


class GraphQLEndpoint:
    """Pure ASGI: /graphql in one pass (see the module docstring); the rest to ``app``."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        view: GatewayView,
        context_getter: Callable[[Request], Awaitable[Context]],
        max_body_bytes: int,
        retry_after: int,
        graphiql: bool,
        lane: CompiledLane | None = None,
    ) -> None:
        self.app = app
        self.lane = lane
        self.view = view
        self.context_getter = context_getter
        self.max_body_bytes = max_body_bytes
        self.retry_after = retry_after
        self.graphiql = graphiql
        self.handlers: dict[type[Exception], Handler] = {
            **ERROR_HANDLERS,
            **unavailable_handlers(retry_after),
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http" and route_path(scope) == GRAPHQL_PATH:
            await self.serve(scope, receive, send)
        elif kind == "websocket" and route_path(scope) == GRAPHQL_PATH:
            await self.view(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        record = RequestRecord(scope)
        status = 500  # recorded when the client goes away before it is answered
        try:
            try:
                response = await self.respond(scope, receive)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is None:
                    raise
                # The server cancels the requests still running when its shutdown grace is
                # over (the only cancellation of a request task): answered, the task then
                # ends normally, the cancellation handled.
                task.uncancel()
                response = shutdown_response(scope, self.retry_after)
            if response is not None:
                response.headers[REQUEST_ID_HEADER] = record.request_id
                status = response.status_code
                await response(scope, receive, send)
        finally:
            record.finish(status)

    async def respond(self, scope: Scope, receive: Receive) -> Response | None:
        accept = None
        for name, value in scope["headers"]:
            if name == b"accept":
                accept = value.decode("latin-1")
        body = await read_body(scope, receive, self.max_body_bytes, accept)
        if body is None or isinstance(body, Response):
            return body  # the client went away, or the body is refused
        request = Request(scope, replay(body, receive))
        try:
            if self.graphiql and wants_page(scope):
                return await graphiql_page(request)
            if scope["method"] not in GRAPHQL_METHODS:
                return error_response(
                    request.headers.get("accept"),
                    405,
                    "Method Not Allowed",
                    headers={"Allow": "GET"},
                )
            context = await self.context_getter(request)
            lane = self.lane if scope["method"] == "POST" else None
            lane_request = None if lane is None else lane.lookup(request, body, context)
            if lane is not None and lane_request is not None and lane_request.plan is not None:
                answer = await lane.answer(lane_request, context)
                if answer is not None:
                    return answer
            response = await self.view.run(request, context)
            if lane is not None and lane_request is not None and lane_request.plan is None:
                lane.learn(lane_request, context)
            assert isinstance(response, Response)
            return response
        except Exception as exc:
            for cls in type(exc).__mro__:
                handler = self.handlers.get(cls)
                if handler is not None:
                    return await handler(request, exc)
            return await unexpected_error(request, exc)
