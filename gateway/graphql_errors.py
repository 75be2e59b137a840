"""Top-level GraphQL errors: authentication, refusals, and masking of everything unexpected.

Expected failures are data (result unions). What reaches ``errors`` is either a request the
caller must fix (UNAUTHENTICATED with HTTP 401, FORBIDDEN with HTTP 403, BAD_USER_INPUT,
GraphQL validation) or a bug, which is masked: a generic message and an error id that also
appears in the structured log with the stack trace.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from typing import Any

from graphql import GraphQLError
from strawberry.extensions import SchemaExtension

from gateway.authz import NotAllowed, NotAuthenticated
from gateway.errors import BadUserInput

logger = logging.getLogger("gateway.errors")


def _code(error: GraphQLError) -> tuple[str, int | None, bool]:
    """(extensions.code, HTTP status or None, mask?) of one error."""
    original = error.original_error
    if original is None:
        return "GRAPHQL_VALIDATION_FAILED", None, False
    if isinstance(original, NotAuthenticated):
        return "UNAUTHENTICATED", 401, False
    if isinstance(original, NotAllowed):
        return "FORBIDDEN", 403, False
    if isinstance(original, BadUserInput):
        return "BAD_USER_INPUT", None, False
    if isinstance(original, GraphQLError):  # e.g. a scalar that failed to parse
        return "BAD_USER_INPUT", None, False
    return "INTERNAL_SERVER_ERROR", None, True


class GatewayErrors(SchemaExtension):
    def on_operation(self) -> Iterator[None]:
        yield
        result = self.execution_context.result
        if result is None or not getattr(result, "errors", None):
            return
        status: int | None = None
        processed: list[GraphQLError] = []
        for error in result.errors:
            code, http_status, mask = _code(error)
            if http_status is not None and (status is None or http_status < status):
                status = http_status
            if mask:
                error_id = uuid.uuid4().hex
                logger.error(
                    "unexpected error %s in %s",
                    error_id,
                    self.execution_context.operation_name or "anonymous operation",
                    exc_info=error.original_error,
                    extra={"error_id": error_id},
                )
                error = GraphQLError(
                    f"Internal server error (error id {error_id})",
                    nodes=error.nodes,
                    path=error.path,
                    extensions={"code": code, "errorId": error_id},
                )
            else:
                extensions: dict[str, Any] = dict(error.extensions or {})
                extensions.setdefault("code", code)
                error = GraphQLError(
                    error.message,
                    nodes=error.nodes,
                    path=error.path,
                    original_error=error.original_error,
                    extensions=extensions,
                )
            processed.append(error)
        result.errors = processed
        context = self.execution_context.context
        response = getattr(context, "response", None)
        if status is not None and response is not None:
            response.status_code = status
