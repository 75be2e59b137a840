"""Media types of GraphQL over HTTP, the ``Accept`` negotiation and JSON error bodies
(the rules: the docstring of ``gateway.api.http``)."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import orjson
from fastapi import Response
from strawberry.http.parse_content_type import parse_content_type

JSON_MEDIA = "application/json"
GRAPHQL_RESPONSE_MEDIA = "application/graphql-response+json"

STATUS_CODES: dict[int, str] = {
    400: "BAD_REQUEST",
    401: "UNAUTHENTICATED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    406: "NOT_ACCEPTABLE",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    429: "RATE_LIMITED",
    500: "INTERNAL_SERVER_ERROR",
}


@functools.lru_cache(maxsize=64)
def _parsed_media_type(content_type: str) -> str:
    return parse_content_type(content_type)[0]


def media_type(content_type: str) -> str:
    """The media type of a Content-Type header, as strawberry reads it (``email.message``:
    ~1% of a worker's CPU per request), remembered for the few short values clients send."""
    if len(content_type) > 100:
        return parse_content_type(content_type)[0]
    return _parsed_media_type(content_type)


def negotiate(accept: str | None) -> str | None:
    """The response media type for an ``Accept`` header; None when it names none we serve."""
    if accept is None or not accept.strip():
        return JSON_MEDIA
    best: tuple[float, int, int] | None = None
    chosen: str | None = None
    for index, part in enumerate(accept.split(",")):
        media, _, params = part.partition(";")
        media = media.strip().lower()
        q = 1.0
        for param in params.split(";"):
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = 0.0
        if not q > 0:  # also NaN
            continue
        if media in (GRAPHQL_RESPONSE_MEDIA, JSON_MEDIA):
            candidate, specific = media, 1
        elif media in ("*/*", "application/*"):
            candidate, specific = JSON_MEDIA, 0
        else:
            continue
        rank = (min(q, 1.0), specific, -index)
        if best is None or rank > best:
            best, chosen = rank, candidate
    return chosen


def error_body(
    message: str, code: str, *, with_data: bool = False, **extensions: Any
) -> dict[str, Any]:
    """A GraphQL-shaped error body with one error."""
    body: dict[str, Any] = {}
    if with_data:
        body["data"] = None
    body["errors"] = [{"message": message, "extensions": {"code": code, **extensions}}]
    return body


def error_response(
    accept: str | None,
    status: int,
    message: str,
    *,
    code: str | None = None,
    headers: Mapping[str, str] | None = None,
    with_data: bool = False,
    **extensions: Any,
) -> Response:
    """A JSON error response in the media type the client accepts (application/json if none)."""
    body = error_body(
        message,
        code or STATUS_CODES.get(status, "BAD_REQUEST"),
        with_data=with_data,
        **extensions,
    )
    return Response(
        orjson.dumps(body),
        status_code=status,
        media_type=negotiate(accept) or JSON_MEDIA,
        headers=dict(headers or {}),
    )
