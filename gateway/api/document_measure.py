"""One linear pass over a GraphQL document: each fragment measured once, reused at every spread.

``measure`` visits every selection set once, fragments in dependency order, and computes each
fragment's depth, aliases, selections and spreads once (memoised), adding them at every spread
of it; counts saturate. ``repeated_selection`` finds a response name selected too often in one
selection set (fragments merged in). ``WORK.nodes`` counts the selections visited, so tests
bound the work by the document's tokens. Used by ``gateway.api.graphql_limits``.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterator
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
)
from graphql.language import Visitor, visit

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
