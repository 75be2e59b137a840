"""Document limits and caches of the GraphQL schema, safe against hostile documents.

Every step here is linear in the document's size, whatever its fragments do: a fragment can
be spread many times, and fragments spreading each other twice double the document each
level (``fragment F1 on Query { ...F0 ...F0 }`` up to F40 is 2^40 selections once inlined).
strawberry's depth and alias limiters expand every spread where it stands, so they walked all
of them; these limits measure each fragment once and reuse its measure at every spread.

- ``DocumentLimits`` (one extension, before validation) measures the document in one pass
  (``measure``): every selection set is visited once, fragments in dependency order, each
  fragment's depth, aliases, selections and spreads computed once (memoised) and added at
  every spread of it. It refuses, in this order:

  - more than ``max_fragment_spreads`` fragment spreads, counted as if every fragment were
    inlined (over all definitions: graphql-core's rules walk fragment definitions too);
  - more than ``max_expanded_selections`` selections counted the same way. A document
    without fragments has fewer selections than tokens, so with the default (the token
    limit) this refuses only documents whose fragments multiply the work of the library
    steps after it (graphql-core's validation rules, which collect fields of fragments per
    selection set, the operation gate, the executor): they walk at most this many;
  - an operation deeper than ``max_depth`` (as strawberry's ``QueryDepthLimiter`` counts:
    introspection fields and what is under them are not counted), one error per operation;
  - more than ``max_aliases`` aliases in the operations (as strawberry's ``MaxAliasesLimiter``
    counts: fragments' aliases at every spread);
  - more than ``MAX_REPEATED_SELECTIONS`` selections of one response name in one selection
    set (inline fragments and fragment spreads merged in). graphql-core's
    ``OverlappingFieldsCanBeMergedRule`` compares such selections pairwise: 400 copies of
    ``billing { customer { id } }`` (3,200 tokens, well under the token limit) cost 1.5 s of
    CPU to validate. Aliased selections (a dashboard's 50 ``usageBalance`` lookups) are not
    affected.

  The verdict depends on the document only: it is remembered per document text (bounded).
  ``WORK.nodes`` counts the selections these steps visit (tests bound it by the tokens).
- ``BoundedParserCache`` / ``BoundedValidationCache``: strawberry's caches, but documents
  longer than ``max_cached_chars`` are parsed and validated without being cached, so a stream
  of distinct huge documents (a 2 MB string literal each) cannot pin 1,024 of them in memory.
  The validation cache also leaves alone a document that an earlier extension already refused
  (``OperationGate``, ``DocumentLimits``): it is not validated at all.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
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
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    ValueNode,
    VariableNode,
    get_operation_ast,
)
from graphql.language import Visitor, visit
from strawberry.extensions import (
    ParserCache,
    SchemaExtension,
    ValidationCache,
)

from gateway.api.rate_limit import RateLimited

MAX_CACHED_CHARS = 64 * 1024
MAX_REPEATED_SELECTIONS = 16
# Measures saturate here: 2^2000 selections need no exact count, and bounded integers keep
# every addition cheap.
SATURATED = 1 << 62


class WorkCounter:
    """Selections visited by the limits of this module (all processes' requests add up)."""

    def __init__(self) -> None:
        self.nodes = 0


WORK = WorkCounter()


@dataclasses.dataclass(frozen=True)
class Measure:
    """A selection set with every fragment spread inlined (each count saturating)."""

    depth: int = 0
    aliases: int = 0
    selections: int = 0
    spreads: int = 0


EMPTY = Measure()


def _measure_selection_set(
    selection_set: SelectionSetNode, fragments: dict[str, Measure]
) -> tuple[Measure, list[str]]:
    """The measure of one selection set, given the measures of the fragments it spreads
    (unknown ones count as empty), and the names it spreads directly. Visits each of its
    selections once (iteratively: nesting cannot exhaust Python's stack)."""
    depth = aliases = selections = spreads = 0
    names: list[str] = []
    pending: list[tuple[SelectionSetNode, int]] = [(selection_set, 0)]
    while pending:
        current, level = pending.pop()
        for selection in current.selections:
            WORK.nodes += 1
            selections += 1
            depth = max(depth, level)
            if isinstance(selection, FieldNode):
                if selection.alias is not None:
                    aliases += 1
                # strawberry's depth limiter ignores introspection fields and their contents
                if selection.selection_set is not None and not selection.name.value.startswith(
                    "__"
                ):
                    pending.append((selection.selection_set, level + 1))
            elif isinstance(selection, InlineFragmentNode):
                pending.append((selection.selection_set, level))
            elif isinstance(selection, FragmentSpreadNode):
                spreads += 1
                names.append(selection.name.value)
                inner = fragments.get(selection.name.value, EMPTY)
                depth = max(depth, level + inner.depth)
                aliases += inner.aliases
                selections += inner.selections
                spreads += inner.spreads
        aliases, selections, spreads = (
            min(aliases, SATURATED),
            min(selections, SATURATED),
            min(spreads, SATURATED),
        )
    return Measure(depth, aliases, selections, spreads), names


@dataclasses.dataclass(frozen=True)
class DocumentMeasure:
    operations: list[tuple[str, Measure]]  # (name or "anonymous", measure)
    fragments: dict[str, Measure]

    @property
    def aliases(self) -> int:
        return sum(m.aliases for _, m in self.operations)

    @property
    def selections(self) -> int:
        return min(SATURATED, sum(m.selections for m in self._all()))

    @property
    def spreads(self) -> int:
        return min(SATURATED, sum(m.spreads for m in self._all()))

    def _all(self) -> Iterator[Measure]:
        yield from (m for _, m in self.operations)
        yield from self.fragments.values()


def measure(document: DocumentNode) -> DocumentMeasure:
    """Every definition of ``document`` measured with its fragments inlined, in time linear in
    the document: each fragment is measured once, after the fragments it spreads (a spread
    that closes a cycle counts as empty: ``NoFragmentCyclesRule`` reports the cycle)."""
    definitions = {
        d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
    }
    # The names each fragment spreads, from one walk of it (measures unknown yet: empty).
    spread_names: dict[str, list[str]] = {
        name: _measure_selection_set(d.selection_set, {})[1] for name, d in definitions.items()
    }
    done: dict[str, Measure] = {}
    entered: set[str] = set()
    for root in definitions:
        if root in entered:
            continue
        entered.add(root)
        # Iterative depth-first post-order: a fragment is measured after all it spreads.
        stack: list[tuple[str, Iterator[str]]] = [(root, iter(spread_names[root]))]
        while stack:
            name, children = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                done[name] = _measure_selection_set(definitions[name].selection_set, done)[0]
            elif child in definitions and child not in entered:
                entered.add(child)
                stack.append((child, iter(spread_names[child])))
    operations = [
        (
            d.name.value if d.name else "anonymous",
            _measure_selection_set(d.selection_set, done)[0],
        )
        for d in document.definitions
        if isinstance(d, OperationDefinitionNode)
    ]
    return DocumentMeasure(operations, done)


def _selection_counts(
    selection_set: SelectionSetNode,
    fragments: dict[str, FragmentDefinitionNode],
    memo: dict[str, Counter[str]],
    active: frozenset[str] = frozenset(),
) -> Counter[str]:
    """Response names selected in one selection set, fragments merged in (each once)."""
    counts: Counter[str] = Counter()
    spreads: set[str] = set()
    pending = list(selection_set.selections)
    while pending:
        selection = pending.pop()
        WORK.nodes += 1
        if isinstance(selection, FieldNode):
            counts[(selection.alias or selection.name).value] += 1
        elif isinstance(selection, InlineFragmentNode):
            pending.extend(selection.selection_set.selections)
        elif isinstance(selection, FragmentSpreadNode):
            spreads.add(selection.name.value)
    for name in spreads - active:
        if name not in memo and name in fragments:
            memo[name] = _selection_counts(
                fragments[name].selection_set, fragments, memo, active | {name}
            )
        merged = memo.get(name, Counter())
        WORK.nodes += len(merged)
        counts.update(merged)
    return counts


def repeated_selection(document: DocumentNode) -> tuple[str, int] | None:
    """The most repeated response name of any selection set, when over the limit."""
    fragments = {
        d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
    }
    memo: dict[str, Counter[str]] = {}
    found: list[tuple[str, int]] = []

    class SelectionSets(Visitor):
        def enter_selection_set(self, node: SelectionSetNode, *_args: Any) -> Any:
            counts = _selection_counts(node, fragments, memo)
            if counts:
                name, times = counts.most_common(1)[0]
                if times > MAX_REPEATED_SELECTIONS:
                    found.append((name, times))
                    return Visitor.BREAK
            return None

    visit(document, SelectionSets())
    return found[0] if found else None


@dataclasses.dataclass(frozen=True)
class Limits:
    max_depth: int
    max_aliases: int
    max_fragment_spreads: int
    max_expanded_selections: int


def refusals(document: DocumentNode, limits: Limits) -> list[str]:
    """Why ``document`` is refused before validation (see the module docstring); [] if not."""
    measured = measure(document)
    if measured.spreads > limits.max_fragment_spreads:
        return [
            f"the document spreads fragments {measured.spreads} times once they are inlined;"
            f" at most {limits.max_fragment_spreads}"
        ]
    if measured.selections > limits.max_expanded_selections:
        return [
            f"the document has {measured.selections} selections once its fragments are"
            f" inlined; at most {limits.max_expanded_selections}"
        ]
    deep = [
        f"'{name}' exceeds maximum operation depth of {limits.max_depth}"
        for name, m in measured.operations
        if m.depth > limits.max_depth
    ]
    if deep:
        return deep
    if measured.aliases > limits.max_aliases:
        return [f"{measured.aliases} aliases found. Allowed: {limits.max_aliases}"]
    repeated = repeated_selection(document)
    if repeated is not None:
        name, times = repeated
        return [
            f"'{name}' is selected {times} times in one selection set;"
            f" at most {MAX_REPEATED_SELECTIONS} (use aliases for distinct lookups)"
        ]
    return []


MAX_VERDICTS = 1024


class DocumentPolicy:
    """The limits of one app and its verdicts, remembered per document text (most requests
    repeat a handful of documents; measuring one cost ~0.1 ms of CPU per request), bounded
    like the parser cache; the oldest verdicts go first."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._verdicts: dict[str, list[str]] = {}

    def refusals(self, query: str | None, document: DocumentNode) -> list[str]:
        if query is None or len(query) > MAX_CACHED_CHARS:
            return refusals(document, self.limits)
        try:
            return self._verdicts[query]
        except KeyError:
            verdict = refusals(document, self.limits)
        if len(self._verdicts) >= MAX_VERDICTS:
            del self._verdicts[next(iter(self._verdicts))]
        self._verdicts[query] = verdict
        return verdict


class DocumentLimits(SchemaExtension):
    """Refuses, before validation, a document over one of the limits of ``policy``."""

    def __init__(self, policy: DocumentPolicy) -> None:
        self.policy = policy

    def on_validate(self) -> Iterator[None]:
        ctx = self.execution_context
        if ctx.graphql_document is not None and ctx.pre_execution_errors is None:
            refused = self.policy.refusals(ctx.query, ctx.graphql_document)
            if refused:
                ctx.pre_execution_errors = [GraphQLError(message) for message in refused]
        yield


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


class BoundedParserCache(ParserCache):
    def __init__(self, maxsize: int, max_cached_chars: int = MAX_CACHED_CHARS) -> None:
        super().__init__(maxsize=maxsize)
        self.max_cached_chars = max_cached_chars

    def on_parse(self) -> Iterator[None]:
        query = self.execution_context.query
        if query is not None and len(query) > self.max_cached_chars:
            yield  # strawberry parses it (with the same parse options, max_tokens included)
            return
        yield from super().on_parse()


class BoundedValidationCache(ValidationCache):
    def __init__(self, maxsize: int, max_cached_chars: int = MAX_CACHED_CHARS) -> None:
        super().__init__(maxsize=maxsize)
        self.max_cached_chars = max_cached_chars

    def on_validate(self) -> Iterator[None]:
        ctx = self.execution_context
        if ctx.pre_execution_errors is not None:
            yield  # refused by an earlier extension: strawberry does not validate it either
            return
        if ctx.query is not None and len(ctx.query) > self.max_cached_chars:
            yield  # strawberry validates it
            return
        yield from super().on_validate()
