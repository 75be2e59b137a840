"""Document limits and caches of the GraphQL schema, safe against hostile documents.

- ``QueryDepthLimit``: strawberry's ``QueryDepthLimiter`` (introspection fields are not
  counted), minus its crash on a spread of an unknown fragment (``{ ...Missing }`` raised a
  ``KeyError``); such a document is reported by graphql-core's ``KnownFragmentNamesRule``.
- ``QueryDepthLimit`` and ``MaxAliasesLimit`` reuse one validation rule class per limit:
  strawberry's limiters make a new class per instance (per request), and the validation cache
  is keyed by the rule classes, so it never hit.
- ``RepeatedSelectionLimit``: at most ``MAX_REPEATED_SELECTIONS`` selections of one response
  name in one selection set (inline fragments and fragment spreads merged in). graphql-core's
  ``OverlappingFieldsCanBeMergedRule`` compares such selections pairwise: 400 copies of
  ``billing { customer { id } }`` (3,200 tokens, well under the token limit) cost 1.5 s of CPU
  to validate. Aliased selections (a dashboard's 50 ``usageBalance`` lookups) are not affected.
- ``BoundedParserCache`` / ``BoundedValidationCache``: strawberry's caches, but documents
  longer than ``max_cached_chars`` are parsed and validated without being cached, so a stream
  of distinct huge documents (a 2 MB string literal each) cannot pin 1,024 of them in memory.
  The validation cache also leaves alone a document that an earlier extension already refused
  (``OperationGate``, ``RepeatedSelectionLimit``): it is not validated at all.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    SelectionSetNode,
    ValidationRule,
)
from graphql.language import Visitor, visit
from strawberry.extensions import (
    AddValidationRules,
    ParserCache,
    SchemaExtension,
    ValidationCache,
)
from strawberry.extensions.max_aliases import create_validator as alias_validator
from strawberry.extensions.query_depth_limiter import create_validator as depth_validator

MAX_CACHED_CHARS = 64 * 1024
MAX_REPEATED_SELECTIONS = 16


def _has_unknown_fragment(document: DocumentNode) -> bool:
    known = {d.name.value for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    unknown: list[str] = []

    class Spreads(Visitor):
        def enter_fragment_spread(self, node: FragmentSpreadNode, *_args: Any) -> None:
            if node.name.value not in known:
                unknown.append(node.name.value)

    visit(document, Spreads())
    return bool(unknown)


@lru_cache(maxsize=16)
def _depth_rule(max_depth: int) -> type[ValidationRule]:
    base: Any = depth_validator(max_depth, None)

    class SafeDepthRule(base):  # type: ignore[misc]
        def __init__(self, context: Any) -> None:
            if _has_unknown_fragment(context.document):
                ValidationRule.__init__(self, context)
            else:
                super().__init__(context)

    return SafeDepthRule


class QueryDepthLimit(AddValidationRules):
    """At most ``max_depth`` nested selections (introspection fields not counted)."""

    def __init__(self, max_depth: int) -> None:
        super().__init__([_depth_rule(max_depth)])


class MaxAliasesLimit(AddValidationRules):
    """At most ``max_alias_count`` aliases in a document."""

    def __init__(self, max_alias_count: int) -> None:
        super().__init__([_alias_rule(max_alias_count)])


_alias_rule = lru_cache(maxsize=16)(alias_validator)


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
        counts.update(memo.get(name, Counter()))
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


# The verdict depends on the document only: kept per document text (most requests repeat a
# handful of documents), bounded like the parser cache; the oldest verdicts go first.
_verdicts: dict[str, tuple[str, int] | None] = {}
MAX_VERDICTS = 1024


def cached_repeated_selection(query: str | None, document: DocumentNode) -> tuple[str, int] | None:
    """``repeated_selection(document)``, remembered for ``query``, the text it was parsed from
    (walking the whole document cost ~0.14 ms of CPU per request)."""
    if query is None or len(query) > MAX_CACHED_CHARS:
        return repeated_selection(document)
    try:
        return _verdicts[query]
    except KeyError:
        verdict = repeated_selection(document)
    if len(_verdicts) >= MAX_VERDICTS:
        del _verdicts[next(iter(_verdicts))]
    _verdicts[query] = verdict
    return verdict


class RepeatedSelectionLimit(SchemaExtension):
    """Refuses, before validation, a document that repeats one selection too often."""

    def on_validate(self) -> Iterator[None]:
        ctx = self.execution_context
        if ctx.graphql_document is not None and ctx.pre_execution_errors is None:
            repeated = cached_repeated_selection(ctx.query, ctx.graphql_document)
            if repeated is not None:
                name, times = repeated
                ctx.pre_execution_errors = [
                    GraphQLError(
                        f"'{name}' is selected {times} times in one selection set;"
                        f" at most {MAX_REPEATED_SELECTIONS} (use aliases for distinct lookups)"
                    )
                ]
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
