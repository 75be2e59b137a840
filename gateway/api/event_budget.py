"""The usage events a request asks for, counted from its document before anything executes.

``UsageEventBudget`` refuses a request whose ``createUsageEvent`` and ``createUsageEvents``
fields (over aliases and fragments) ask for more than the batch limit in all, and charges the
caller's rate limit one unit per event (``gateway.api.rate_limit``). A hold, its settlement
or release, and a void count as one event each.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from graphql import (
    DocumentNode,
    ExecutionResult,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    ListValueNode,
    NullValueNode,
    OperationType,
    ValueNode,
    VariableNode,
    get_operation_ast,
)
from strawberry.extensions import (
    SchemaExtension,
)

from gateway.api.document_measure import WORK
from gateway.api.rate_limit import RateLimited

# Root fields recording usage events, or moving a balance as much work as one (a hold, its
# settlement or release, a void): whether their ``input`` is a list of events.
EVENT_FIELDS = {
    "createUsageEvent": False,
    "createUsageEvents": True,
    "reserveUsage": False,
    "finalizeUsageReservation": False,
    "releaseUsageReservation": False,
    "voidUsageEvent": False,
}


def _events_of(value: ValueNode, variables: Mapping[str, Any]) -> int:
    """Events in an ``input`` argument of createUsageEvents, as given (before coercion): a list
    holds one per item, a single value (coerced to a list of one) or a variable of one is one."""
    if isinstance(value, VariableNode):
        raw = variables.get(value.name.value)
        if raw is None:
            return 0
        return len(raw) if isinstance(raw, list) else 1
    if isinstance(value, NullValueNode):
        return 0
    return len(value.values) if isinstance(value, ListValueNode) else 1


def usage_events(
    document: DocumentNode, operation_name: str | None, variables: Mapping[str, Any]
) -> list[int]:
    """Usage events the operation asks to record, per root field recording any (aliases, inline
    fragments and fragments included; a response name selected twice executes once, as in
    graphql-core's field collection). ``@skip``/``@include`` are not evaluated: a field
    selected conditionally counts. Linear: each fragment is visited once."""
    operation = get_operation_ast(document, operation_name)
    if operation is None or operation.operation != OperationType.MUTATION:
        return []
    fragments = {
        d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
    }
    fields: dict[str, FieldNode] = {}
    seen: set[str] = set()
    pending = [operation.selection_set]
    while pending:
        for selection in pending.pop().selections:
            WORK.nodes += 1
            if isinstance(selection, FieldNode):
                fields.setdefault((selection.alias or selection.name).value, selection)
            elif isinstance(selection, InlineFragmentNode):
                pending.append(selection.selection_set)
            elif isinstance(selection, FragmentSpreadNode) and selection.name.value not in seen:
                seen.add(selection.name.value)
                fragment = fragments.get(selection.name.value)
                if fragment is not None:
                    pending.append(fragment.selection_set)
    events: list[int] = []
    for field in fields.values():
        is_list = EVENT_FIELDS.get(field.name.value)
        if is_list is not None:
            events.extend(
                _events_of(argument.value, variables) if is_list else 1
                for argument in field.arguments or ()
                if argument.name.value == "input"
            )
    return events


class UsageEventBudget(SchemaExtension):
    """Before execution, counts the usage events a request would record (``usage_events``).
    More than ``max_events`` over several fields refuse the whole request (nothing runs; one
    createUsageEvents over the limit by itself is answered by the field: every item
    ``InvalidInput``, nothing recorded, nothing charged). Otherwise the caller's rate limit is
    charged one token per event beyond the first (the request's own token was taken when it
    arrived), and a request it cannot pay for is refused with HTTP 429."""

    def __init__(self, max_events: int) -> None:
        self.max_events = max_events

    def on_execute(self) -> Iterator[None]:
        ctx = self.execution_context
        if ctx.result is None and ctx.graphql_document is not None:
            fields = usage_events(ctx.graphql_document, ctx.operation_name, ctx.variables or {})
            events = sum(fields)
            if events > self.max_events and len(fields) > 1:
                ctx.result = ExecutionResult(
                    data=None,
                    errors=[
                        GraphQLError(
                            f"the request records {events} usage events; at most"
                            f" {self.max_events} per request, over all its fields"
                        )
                    ],
                )
            elif 1 < events <= self.max_events:
                try:
                    ctx.context.charge(events - 1)
                except RateLimited as exc:
                    ctx.context.rate_limited = exc
                    ctx.result = ExecutionResult(
                        data=None,
                        errors=[GraphQLError(str(exc), extensions={"code": "RATE_LIMITED"})],
                    )
        yield
