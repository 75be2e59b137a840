"""Strawberry's ASGI view of /graphql with the gateway's negotiation, status codes and JSON
error bodies (the rules: the docstring of ``gateway.api.http``), and the graphql-transport-ws
subscriptions.

The view is strawberry's plain ASGI integration (``strawberry.asgi.GraphQL``), not its FastAPI
router: ``gateway.api.endpoint`` calls it directly, without FastAPI's routing and dependency
injection, after it has authenticated the request and charged its rate limit.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from cross_web import HTTPException
from graphql import GraphQLError
from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket, WebSocketDisconnect
from strawberry.asgi import ASGIWebSocketAdapter, GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.http import GraphQLRequestData
from strawberry.http.exceptions import WebSocketDisconnected
from strawberry.schema.exceptions import InvalidOperationTypeError
from strawberry.types import ExecutionResult
from strawberry.types.unset import UNSET, UnsetType

from gateway.api.context import Context
from gateway.api.graphiql import GRAPHQL_PARAMS
from gateway.api.media import (
    GRAPHQL_RESPONSE_MEDIA,
    JSON_MEDIA,
    error_response,
    media_type,
    negotiate,
)
from gateway.api.persisted import (
    PersistedDocumentError,
    PersistedDocumentRefused,
    PersistedDocuments,
    document_id_in,
    with_document_id,
)
from gateway.api.rate_limit import RateLimited
from gateway.callers.auth import AuthenticationError
from gateway.live.sessions import Session

ContextGetter = Callable[[Request | WebSocket], Awaitable[Context]]


class GatewayHTTPError(HTTPException):
    """A refusal of the HTTP layer, answered by ``GatewayView`` with a JSON error body."""

    def __init__(
        self, status_code: int, reason: str, *, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(status_code, reason)
        self.headers = dict(headers or {})


def rate_limited_response(accept: str | None, exc: RateLimited) -> Response:
    return error_response(
        accept,
        429,
        f"{exc}: retry in {exc.retry_after} s",
        headers={"Retry-After": str(exc.retry_after)},
        retryAfter=exc.retry_after,
    )


class TextFrames(ASGIWebSocketAdapter):
    """graphql-transport-ws messages go out as text frames, as the protocol says (browsers
    hand binary frames to the page as Blobs): ``encode_json`` gives bytes for HTTP, which
    strawberry's adapter would send as binary."""

    async def send_json(self, message: Mapping[str, object]) -> None:
        try:
            await self.ws.send_text(orjson.dumps(message).decode())
        except WebSocketDisconnect as exc:
            raise WebSocketDisconnected from exc


class GatewayView(GraphQL[Context, None]):
    """Strawberry's ASGI view with the negotiation, status codes and JSON error bodies above."""

    websocket_adapter_class = TextFrames

    def __init__(
        self,
        *args: Any,
        context_getter: ContextGetter,
        persisted: PersistedDocuments | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.context_getter = context_getter
        self.persisted = persisted  # APQ and trusted documents: gateway.api.persisted

    async def get_context(self, request: Request | WebSocket, response: Any) -> Context:
        return await self.context_getter(request)

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

    async def execute_operation(self, *args: Any, **kwargs: Any) -> Any:
        # The response's status and headers (401, 403, 503: gateway.api.graphql_errors) are
        # set on the context's sub-response, which the view merges into its answer.
        kwargs["context"].response = kwargs["sub_response"]
        return await super().execute_operation(*args, **kwargs)

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
            elif (
                request.method == "POST"
                and media_type(request.headers.get("content-type", "")) != JSON_MEDIA
            ):
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
        if response.media_type == JSON_MEDIA:
            with_media(response, media, None if context is UNSET else context)
        return response


def with_media(response: Response, media: str, context: Context | None) -> None:
    """A JSON answer of the view in the negotiated media type (also gateway.api.compiled_lane)."""
    if media == JSON_MEDIA:
        return
    response.headers["content-type"] = media
    if context is not None and context.request_error and response.status_code == 200:
        # GraphQL over HTTP: a request error (the operation never ran) is a 400 with no
        # "data" entry at all for this media type.
        response.status_code = 400
        body = orjson.loads(response.body)
        if isinstance(body, dict) and body.pop("data", "absent") is None:
            response.body = orjson.dumps(body)
            response.headers["content-length"] = str(len(response.body))
