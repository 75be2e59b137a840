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
from collections.abc import Iterator

from graphql import (
    DocumentNode,
    GraphQLError,
)
from strawberry.extensions import (
    ParserCache,
    SchemaExtension,
    ValidationCache,
)

from gateway.api.document_measure import MAX_REPEATED_SELECTIONS, measure, repeated_selection

MAX_CACHED_CHARS = 64 * 1024


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
    """strawberry's cache is keyed by the parsed document, whose hash walks the whole tree
    (graphql-core's nodes hash by value: ~3% of a worker's CPU per createUsageEvent, issue
    #16). The parser cache gives the same document for the same text, so the verdicts are
    looked up by the text (and the rules) first; strawberry's cache validates the others."""

    def __init__(self, maxsize: int, max_cached_chars: int = MAX_CACHED_CHARS) -> None:
        super().__init__(maxsize=maxsize)
        self.maxsize = maxsize
        self.max_cached_chars = max_cached_chars
        self._by_text: dict[tuple[str, tuple[type, ...]], list[GraphQLError]] = {}

    def on_validate(self) -> Iterator[None]:
        ctx = self.execution_context
        if ctx.pre_execution_errors is not None:
            yield  # refused by an earlier extension: strawberry does not validate it either
            return
        query = ctx.query
        if query is not None and len(query) > self.max_cached_chars:
            yield  # strawberry validates it
            return
        if query is None:
            yield from super().on_validate()
            return
        key = (query, tuple(ctx.validation_rules))
        errors = self._by_text.get(key)
        if errors is not None:
            ctx.pre_execution_errors = errors
            yield
            return
        validated = super().on_validate()
        next(validated)  # validates: sets the context's pre_execution_errors
        if ctx.pre_execution_errors is not None:
            if len(self._by_text) >= self.maxsize:
                del self._by_text[next(iter(self._by_text))]  # the oldest first
            self._by_text[key] = ctx.pre_execution_errors
        yield
        next(validated, None)
