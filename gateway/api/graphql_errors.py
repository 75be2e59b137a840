"""Top-level GraphQL errors: authentication, refusals, and masking of everything unexpected.

Expected failures are data (result unions). What reaches ``errors`` is either a request the
caller must fix or a bug:

- ``UNAUTHENTICATED`` (HTTP 401) and ``FORBIDDEN`` (HTTP 403): refusals of ``gateway.callers.authz``.
- ``GRAPHQL_PARSE_FAILED``, ``GRAPHQL_VALIDATION_FAILED`` (including the depth, alias and token
  limits) and ``BAD_USER_INPUT`` (variables of the wrong type, bad arguments): the request is
  wrong. When the operation never executed, the context's ``request_error`` is set, so the HTTP
  layer can answer 400 to clients that asked for ``application/graphql-response+json``.
- ``SERVICE_UNAVAILABLE`` (HTTP 503 with ``Retry-After``): the database could not serve the
  request in time or at all (``gateway.storage.db.DatabaseUnavailable``: a timeout, an outage).
  Logged once, on one line, without a stack trace: it is not a bug, and retrying is safe.
- Anything else is a bug and is masked: a generic message and an error id, which also appears
  in the structured log record (``extra={"error_id": ...}``) with the stack trace.

Expected errors are never logged with a stack trace: ``GatewaySchema.process_errors`` (which
strawberry calls for every error) logs them at DEBUG on one line and leaves the unexpected ones
to ``finalize_errors``, which logs each once (logger ``gateway.errors``, with its id and stack
trace). It runs as the ``GatewayErrors`` extension leaves the operation, and again in
``GatewaySchema.execute`` for errors raised by an extension hook (strawberry then skips every
operation hook).

Field suggestions ("Did you mean 'customers'?") describe the schema to whoever guesses at it;
production leaves them out (``Settings.field_suggestions``). graphql-core 3.3 has the switch
(``hide_suggestions`` of ``validate``, ``execute`` and ``get_variable_values``), but strawberry
calls all three without it: ``GatewaySchema(hide_suggestions=True)`` passes it to execution
(variable coercion included) and the ``HideSuggestions`` extension validates again, with it, a
document whose validation errors suggest something.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import strawberry
from graphql import ExecutionResult as GraphQLExecutionResult
from graphql import GraphQLError, GraphQLSyntaxError, validate
from graphql import execute as graphql_execute
from strawberry.extensions import SchemaExtension
from strawberry.extensions.runner import SchemaExtensionsRunner
from strawberry.schema.validation_rules.maybe_null import MaybeNullValidationRule
from strawberry.schema.validation_rules.one_of import OneOfInputValidationRule
from strawberry.types import ExecutionContext, ExecutionResult
from strawberry.types.execution import PreExecutionError
from strawberry.types.graphql import OperationType

from gateway.api import graphql_fast
from gateway.api.extension_hooks import CachedHooksRunner
from gateway.api.graphql_fast import CompiledOperation, FastExecutor
from gateway.callers.authz import NotAllowed, NotAuthenticated
from gateway.errors import BadUserInput
from gateway.storage.unavailable import SERVER_UNAVAILABLE_ERRORS, DatabaseUnavailable, unavailable

logger = logging.getLogger("gateway.errors")

_STATUS = {"UNAUTHENTICATED": 401, "FORBIDDEN": 403, "SERVICE_UNAVAILABLE": 503}
DEFAULT_RETRY_AFTER = 1
_REQUEST_ERRORS = frozenset({"GRAPHQL_PARSE_FAILED", "GRAPHQL_VALIDATION_FAILED", "BAD_USER_INPUT"})


def error_code(error: GraphQLError, *, executing: bool = False) -> str:
    """The ``extensions.code`` of one error; INTERNAL_SERVER_ERROR means a bug (masked).

    ``executing``: the error arose after validation, so one without a path is about the
    request's variables (graphql-core coerces them before any resolver runs).
    """
    original = error.original_error
    if isinstance(original, NotAuthenticated):
        return "UNAUTHENTICATED"
    if isinstance(original, NotAllowed):
        return "FORBIDDEN"
    if isinstance(original, (DatabaseUnavailable, *SERVER_UNAVAILABLE_ERRORS)):
        return "SERVICE_UNAVAILABLE"
    if isinstance(error, GraphQLSyntaxError) or isinstance(original, RecursionError):
        return "GRAPHQL_PARSE_FAILED"
    if isinstance(original, BadUserInput | GraphQLError):  # e.g. a scalar that failed to parse
        return "BAD_USER_INPUT"
    if executing and not error.path:
        return "BAD_USER_INPUT"
    if original is None:
        return "BAD_USER_INPUT" if executing else "GRAPHQL_VALIDATION_FAILED"
    return "INTERNAL_SERVER_ERROR"


def finalize_errors(
    result: Any, context: Any, operation_name: str | None, *, executing: bool
) -> None:
    """Give every error of ``result`` its code, mask the unexpected ones, set the HTTP status.

    Idempotent: errors that already carry ``extensions.code`` are left as they are.
    """
    if result is None or not result.errors:
        return
    status: int | None = None
    codes: list[str] = []
    processed: list[GraphQLError] = []
    settings = getattr(context, "settings", None)
    retry_after = getattr(settings, "gateway_retry_after_seconds", DEFAULT_RETRY_AFTER)
    for error in result.errors:
        code = (error.extensions or {}).get("code")
        if code is None:
            code = error_code(error, executing=executing)
            error = _with_code(error, code, operation_name, retry_after)
        codes.append(code)
        http_status = _STATUS.get(code)
        if http_status is not None and (status is None or http_status < status):
            status = http_status
        processed.append(error)
    result.errors = processed
    if (
        result.data is None
        and hasattr(context, "request_error")
        and all(c in _REQUEST_ERRORS for c in codes)
        and not any(e.path for e in processed)
    ):
        # The operation never ran: a GraphQL request error (parse, validation, variables).
        context.request_error = True
    response = getattr(context, "response", None)
    if status is not None and response is not None:
        response.status_code = status
        if status == 401:
            response.headers["WWW-Authenticate"] = "Bearer"
        elif status == 503:
            response.headers["Retry-After"] = str(retry_after)


def unavailable_message(reason: str, retry_after: int) -> str:
    return f"Service unavailable: {reason}; retry in {retry_after} s"


def _with_code(
    error: GraphQLError, code: str, operation_name: str | None, retry_after: int
) -> GraphQLError:
    if code == "SERVICE_UNAVAILABLE":
        original = error.original_error
        if not isinstance(original, DatabaseUnavailable):
            assert original is not None  # error_code() says so
            original = unavailable(original)
        logger.warning(
            "service unavailable in %s: %s",
            operation_name or "anonymous operation",
            original.reason,
            extra={"reason": original.reason},
        )
        return GraphQLError(
            unavailable_message(original.reason, retry_after),
            nodes=error.nodes,
            source=error.source,
            positions=error.positions,
            path=error.path,
            extensions={"code": code, "retryAfter": retry_after},
        )
    if code == "INTERNAL_SERVER_ERROR":
        error_id = uuid.uuid4().hex
        logger.error(
            "unexpected error %s in %s",
            error_id,
            operation_name or "anonymous operation",
            exc_info=error.original_error,
            extra={"error_id": error_id},
        )
        return GraphQLError(
            f"Internal server error (error id {error_id})",
            nodes=error.nodes,
            source=error.source,
            positions=error.positions,
            path=error.path,
            extensions={"code": code, "errorId": error_id},
        )
    message = error.message
    if isinstance(error.original_error, RecursionError):
        message = "the document is nested too deeply"
    return GraphQLError(
        message,
        nodes=error.nodes,
        source=error.source,
        positions=error.positions,
        path=error.path,
        original_error=error.original_error,
        extensions={**(error.extensions or {}), "code": code},
    )


class GatewaySchema(strawberry.Schema):
    """The schema, without strawberry's stack trace per error in the log, and with every error
    finalized even when an extension hook failed (strawberry then skips the operation hooks,
    ``GatewayErrors`` included). The mutations named in ``fast_fields`` run compiled
    (``gateway.api.graphql_fast``) when their document allows it. ``hide_suggestions``: execution
    errors (variables that do not fit their type) name no other field or value."""

    def __init__(
        self,
        *args: Any,
        fast_fields: Iterable[str] = (),
        hide_suggestions: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._fast: FastExecutor | None = None
        self._hide_suggestions = hide_suggestions
        fast_fields = list(fast_fields)
        if fast_fields and not graphql_fast.proven():
            logger.warning(
                "compiled execution is off: strawberry %s is not a release it is proven on (%s)",
                graphql_fast.STRAWBERRY_VERSION,
                ", ".join(graphql_fast.PROVEN_STRAWBERRY),
            )
            fast_fields = []
        if fast_fields:
            self._fast = FastExecutor(
                self._schema,
                fast_fields,
                graphql_execute,
                names=self.config.name_converter,
                leaves=self.schema_converter.scalar_registry,
            )

    async def run_compiled(
        self, plan: CompiledOperation, context: Any, variables: dict[str, Any] | None
    ) -> GraphQLExecutionResult:
        """A compiled plan's run, as this schema's executor runs it (gateway.api.compiled_lane)."""
        return await plan.run(
            self._schema, context, variables, hide_suggestions=self._hide_suggestions
        )

    def _get_execute_function(self) -> Callable[..., Any]:
        execute_function = super()._get_execute_function()
        if self._fast is not None and execute_function is graphql_execute:
            execute_function = self._fast.execute
        if self._hide_suggestions:
            return functools.partial(execute_function, hide_suggestions=True)
        return execute_function

    def create_extensions_runner(
        self, execution_context: ExecutionContext, extensions: list[SchemaExtension]
    ) -> SchemaExtensionsRunner:
        # Each extension class's hooks looked up once (gateway.api.extension_hooks).
        runner = CachedHooksRunner if graphql_fast.proven() else SchemaExtensionsRunner
        return runner(execution_context=execution_context, extensions=extensions)

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        # Strawberry sets the context's result before it reports execution errors, and after
        # it reports parse and validation errors.
        executing = execution_context is not None and execution_context.result is not None
        for error in errors:
            code = error_code(error, executing=executing)
            if code != "INTERNAL_SERVER_ERROR":  # unexpected ones: logged by finalize_errors
                logger.debug("graphql request error %s: %s", code, error.message)

    async def execute(
        self,
        query: str | None,
        variable_values: dict[str, Any] | None = None,
        context_value: Any | None = None,
        root_value: Any | None = None,
        operation_name: str | None = None,
        allowed_operation_types: Iterable[OperationType] | None = None,
        operation_extensions: dict[str, Any] | None = None,
    ) -> ExecutionResult:
        result = await super().execute(
            query,
            variable_values=variable_values,
            context_value=context_value,
            root_value=root_value,
            operation_name=operation_name,
            allowed_operation_types=allowed_operation_types,
            operation_extensions=operation_extensions,
        )
        finalize_errors(
            result,
            context_value,
            operation_name,
            executing=not isinstance(result, PreExecutionError),
        )
        return result


class GatewayErrors(SchemaExtension):
    """Finalizes the errors as the operation ends, so that the other extensions' operation
    hooks (metrics) see the codes; ``GatewaySchema.execute`` catches what it could not."""

    def on_operation(self) -> Iterator[None]:
        yield
        ctx = self.execution_context
        finalize_errors(
            ctx.result,
            ctx.context,
            ctx.operation_name,
            executing=not isinstance(ctx.result, PreExecutionError),
        )

    def get_results(self) -> dict[str, Any]:
        # Hints for the developer that are not errors (Context.warn): extensions.warnings.
        warnings = getattr(self.execution_context.context, "warnings", None)
        return {"warnings": list(warnings)} if warnings else {}


# What graphql-core's ``did_you_mean`` starts every suggestion with.
SUGGESTION = " Did you mean "


class HideSuggestions(SchemaExtension):
    """Validation errors without "Did you mean ...?": when strawberry's validation (cached, so
    valid documents cost nothing more) found errors that suggest names, the document is
    validated again by graphql-core with ``hide_suggestions=True`` and the same rules, and
    those errors replace the first ones in the operation's result (as the operation ends:
    strawberry builds the result from the error list inside the validation hook, and that
    list may be the validation cache's own, which is left as it is). Must come after
    ``GatewayErrors`` in the extension list, so that it leaves the operation first."""

    def on_operation(self) -> Iterator[None]:
        yield
        ctx = self.execution_context
        result = ctx.result
        if (
            not isinstance(result, PreExecutionError)
            or not result.errors
            or ctx.graphql_document is None
            or not any(SUGGESTION in error.message for error in result.errors)
        ):
            return
        result.errors = validate(
            ctx.schema._schema,
            ctx.graphql_document,
            (*ctx.validation_rules, MaybeNullValidationRule, OneOfInputValidationRule),
            hide_suggestions=True,
        )
