"""/graphql without strawberry's per-request pipeline, for a document it has already run.

Under createUsageEvent load about a fifth of a worker's CPU went to the layers around the
compiled executor (``gateway.api.graphql_fast``): strawberry's HTTP view (request adapters,
body parsing, the sub-response), its ``Schema.execute`` (an execution context, the extension
runner and its hooks, the parser and validation caches' look-ups, the result's processing),
issue #16. None of that depends on the request once a document has been run: parsing,
the token, depth and alias limits, validation, introspection, the persisted-documents rules
and the root-field gate are decided by the document's text and the caller's kind.

``CompiledLane`` remembers, per (query text, operationName, caller kind), the compiled plan
that strawberry's pipeline ran for it: a request is learned only when strawberry ran it through
``FastExecutor`` (every check before execution passed: ``Context.compiled`` is set by the
executor). A later request with the same text, name and kind of caller is answered here:

1. the same HTTP checks as ``GatewayView.run`` (POST, the ``Accept`` negotiation, a JSON
   ``Content-Type``) and a body that is a JSON object of ``query`` (a string), ``variables``
   (an object or null) and ``operationName`` (a string or null) only;
2. the usage-event budget, as ``gateway.api.event_budget.UsageEventBudget`` applies it: the
   rate limit charged one token per event beyond the first; a request the rate limit cannot
   pay for is left to strawberry (whose budget refuses it; nothing was charged here);
3. the plan's run: variables coerced by graphql-core, the field's resolver, the compiled
   selection plan;
4. what strawberry and the schema's extensions do as the operation ends, in their order: the
   errors reported (``GatewaySchema.process_errors``), ``extensions.warnings``, the operation's
   metrics (``observability.record_operation``), the errors finalized (codes, masking, HTTP
   status: ``finalize_errors``, as ``GatewayErrors`` does);
5. the response as strawberry's ASGI view makes it (``process_result``, the sub-response's
   status and headers) and with ``GatewayView.run``'s media type.

Everything else (a miss, another shape of body, GET, ``extensions`` such as persisted-query
hashes, ``documentId``, a refusal by the budget, tracing on) goes to strawberry with the same
context, before anything ran: the lane is an optimisation, never a different answer.
``tests/test_compiled_lane.py`` compares both answer for answer.

Hand-written: strawberry has no API to run a validated document again without its pipeline.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from starlette.responses import Response
from strawberry.http import process_result

from gateway.api import observability
from gateway.api.event_budget import usage_events
from gateway.api.graphql_errors import finalize_errors
from gateway.api.graphql_fast import CompiledOperation
from gateway.api.graphql_limits import MAX_CACHED_CHARS
from gateway.api.graphql_view import GatewayView, with_media
from gateway.api.media import JSON_MEDIA, media_type, negotiate
from gateway.api.rate_limit import RateLimited

if TYPE_CHECKING:
    from starlette.requests import Request

    from gateway.api.context import Context
    from gateway.api.graphql_errors import GatewaySchema

BODY_KEYS = frozenset({"query", "variables", "operationName"})

Key = tuple[str, str | None, str]  # (query text, operationName as sent, caller kind)


@dataclass(frozen=True, slots=True)
class LaneRequest:
    """A request the lane could answer: its key, variables and media type; ``plan`` when the
    lane knows the document (else strawberry answers, and the lane may learn it)."""

    key: Key
    variables: dict[str, Any] | None
    media: str
    plan: CompiledOperation | None


class CompiledLane:
    def __init__(self, view: GatewayView, *, max_events: int, maxsize: int = 256) -> None:
        self.view = view
        self.max_events = max_events  # UsageEventBudget's (GATEWAY_MAX_BATCH_SIZE)
        self.schema: GatewaySchema = view.schema  # type: ignore[assignment]
        self.maxsize = maxsize
        self._plans: OrderedDict[Key, CompiledOperation] = OrderedDict()
        self.answered = 0  # requests answered by the lane (for tests)

    def lookup(self, request: Request, body: bytes, context: Context) -> LaneRequest | None:
        """The lane's view of a POST body (None: not one the lane may answer, ever)."""
        headers = request.headers
        media = negotiate(headers.get("accept"))
        if media is None or media_type(headers.get("content-type", "")) != JSON_MEDIA:
            return None
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
        if type(data) is not dict or not BODY_KEYS.issuperset(data):
            return None
        query = data.get("query")
        variables = data.get("variables")
        name = data.get("operationName")
        if (
            type(query) is not str
            or len(query) > MAX_CACHED_CHARS
            or not (variables is None or type(variables) is dict)
            or not (name is None or type(name) is str)
        ):
            return None
        key = (query, name, context.caller.kind)
        plan = self._plans.get(key)
        if plan is not None:
            self._plans.move_to_end(key)
        return LaneRequest(key, variables, media, plan)

    def learn(self, lane_request: LaneRequest, context: Context) -> None:
        """After strawberry answered ``lane_request``: remember the plan it ran, if any."""
        plan = context.compiled
        if not isinstance(plan, CompiledOperation):
            return
        self._plans[lane_request.key] = plan
        if len(self._plans) > self.maxsize:
            self._plans.popitem(last=False)

    async def answer(self, lane_request: LaneRequest, context: Context) -> Response | None:
        """The response, or None when strawberry must answer (nothing has run then)."""
        plan = lane_request.plan
        assert plan is not None
        name = lane_request.key[1]
        variables = lane_request.variables
        try:
            fields = usage_events(plan.document, name, variables or {})
        except Exception:  # strawberry's budget meets the same input and answers it
            return None
        # A plan has one root field (graphql_fast): a single field over the batch limit answers
        # every item InvalidInput and is charged nothing more, as under the budget.
        events = sum(fields)
        if 1 < events <= self.max_events:
            try:
                context.charge(events - 1)
            except RateLimited:
                return None  # nothing charged: strawberry's budget answers HTTP 429
        self.answered += 1
        schema = self.schema
        operation_name = plan.operation.name.value if plan.operation.name else None
        sub_response = Response()
        sub_response.status_code = None  # type: ignore[assignment]
        del sub_response.headers["content-length"]
        context.response = sub_response
        started = time.perf_counter()
        result = await schema.run_compiled(plan, context, variables)
        errors = result.errors
        if errors:
            schema.process_errors(errors, None)
        warnings = context.warnings
        result.extensions = {"warnings": list(warnings)} if warnings else {}
        observability.record_operation(
            operation_name,
            context.caller.kind,
            "mutation",
            list(errors or []),
            executing=not errors,
            elapsed=time.perf_counter() - started,
        )
        # As GatewayErrors does when the operation ends (GatewaySchema.execute's second call
        # finds every error finalized already).
        finalize_errors(result, context, operation_name, executing=True)
        response = self.view.create_response(process_result(result), sub_response)
        with_media(response, lane_request.media, context)
        return response
