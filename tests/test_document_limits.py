"""Hostile documents: every limit step is linear in the document, whatever its fragments do.

The work of the limits is read from their own counter (``WORK.nodes``: selections visited),
never from a timer. The documents are the worst the token limit lets through.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from graphql import Source, TokenKind
from graphql.language.lexer import Lexer

from gateway.api.document_measure import WORK
from gateway.settings import Settings
from gateway.storage.db import Database
from tests.conftest import GraphQLClient
from tests.servers import gateway_processes
from tests.test_http import bearer, gateway_app

MAX_TOKENS = 20000


def tokens(document: str) -> int:
    """Tokens as the parser counts them (what ``GATEWAY_MAX_TOKENS`` bounds)."""
    lexer = Lexer(Source(document))
    count = 0
    while lexer.advance().kind != TokenKind.EOF:
        count += 1
    return count


def largest(build: Callable[[int], str], limit: int = MAX_TOKENS) -> str:
    """``build(n)`` for the largest n whose document stays within ``limit`` tokens."""
    low, high = 1, 2
    while tokens(build(high)) <= limit:
        low, high = high, high * 2
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if tokens(build(mid)) <= limit else (low, mid)
    return build(low)


def doubling(n: int) -> str:
    """F(i) spreads F(i-1) twice: 2^n selections once inlined."""
    fragments = " ".join(
        f"fragment F{i} on Query {{ ...F{i - 1} ...F{i - 1} }}" for i in range(1, n + 1)
    )
    return f"{{ ...F{n} }} fragment F0 on Query {{ __typename }} {fragments}"


def chain(n: int) -> str:
    """F(i) spreads F(i+1): each fragment definition reaches all those after it."""
    fragments = " ".join(
        f"fragment F{i} on Query {{ __typename ...F{i + 1} }}" for i in range(n - 1)
    )
    return f"{{ ...F0 }} {fragments} fragment F{n - 1} on Query {{ __typename }}"


def operations_on_a_chain(n: int) -> str:
    """n operations, each spreading a chain of n fragments."""
    operations = " ".join(f"query Q{i} {{ ...F0 }}" for i in range(n))
    return operations + " " + chain(n)[len("{ ...F0 } ") :]


def wide_fragment(n: int) -> str:
    """A fragment of n aliased fields, spread in n selection sets."""
    fields = " ".join(f"a{i}: __typename" for i in range(n))
    sets = " ".join(f's{i}: billing(customerExternalId: "x") {{ ...W }}' for i in range(n))
    return f"{{ {sets} }} fragment W on BillingResult {{ ... on BillingResult {{ {fields} }} }}"


def nested_aliases(n: int) -> str:
    """n aliased lookups, each 12 aliased levels deep (the parser refuses deeper nesting)."""
    inner = "i: id"
    for level in range(6):
        inner = f"b{level}: billing {{ c{level}: customer {{ {inner} }} }}"
    lookups = " ".join(
        f"r{i}: customers(first: 1) {{ e: edges {{ n: node {{ {inner} }} }} }}" for i in range(n)
    )
    return "{ " + lookups + " }"


def wide_aliases(n: int) -> str:
    return "{ " + " ".join(f"a{i}: __typename" for i in range(n)) + " }"


def repeated_directives(n: int) -> str:
    return "{ __typename " + "@skip(if: false) " * n + "}"


def long_list(n: int) -> str:
    """One createUsageEvents with a literal list of n events (valid: validation coerces each)."""
    items = ", ".join('{target: {usageMeterSlug: "g"}, amount: 1}' for _ in range(n))
    return f"mutation {{ createUsageEvents(input: [{items}]) {{ __typename }} }}"


def many_small_fragments(n: int) -> str:
    """n fragments, all spread once (distinct, so nothing is merged away), accepted when the
    response names stay under the repetition limit: the work graphql-core then does."""
    spreads = " ".join(f"...F{i}" for i in range(n))
    fragments = " ".join(f"fragment F{i} on Query {{ a{i % 200}: __typename }}" for i in range(n))
    return f"{{ {spreads} }} {fragments}"


def repeated_fields(n: int) -> str:
    return "{ " + "billing { customer { id } } " * n + "}"


def spread_everywhere(n: int) -> str:
    """n inline fragments, each spreading the same two fragments."""
    sets = " ".join("... on Query { ...A ...B }" for _ in range(n))
    return "{ " + sets + " } fragment A on Query { __typename } fragment B on Query { ...A }"


WORST = {
    "doubling fragments": doubling,
    "a chain of fragments": chain,
    "operations on a chain": operations_on_a_chain,
    "a wide fragment spread widely": wide_fragment,
    "nested aliases": nested_aliases,
    "wide aliases": wide_aliases,
    "repeated directives": repeated_directives,
    "a long list": long_list,
    "many small fragments": many_small_fragments,
    "repeated fields": repeated_fields,
    "spreads in many selection sets": spread_everywhere,
}


@pytest.mark.parametrize("kind", sorted(WORST))
async def test_the_limits_visit_a_bounded_multiple_of_the_tokens(
    kind: str, gql: GraphQLClient, settings: Settings
) -> None:
    assert settings.gateway_max_tokens == MAX_TOKENS
    document = largest(WORST[kind])
    count = tokens(document)
    assert count <= MAX_TOKENS
    before = WORK.nodes
    response = await gql(document)
    visited = WORK.nodes - before
    assert response.status == 200
    # Each selection is visited at most twice by the measure and once by the repeated
    # selection check (plus what it merges, each fragment's names once per selection set).
    assert 0 < visited <= 3 * count, (kind, visited, count)


async def test_doubling_fragments_are_refused_before_validation(gql: GraphQLClient) -> None:
    before = WORK.nodes
    response = await gql(doubling(40))
    assert WORK.nodes - before == 163  # 81 selections walked twice, 1 of the operation
    assert (response.status, response.body) == (
        200,
        {
            "data": None,
            "errors": [
                {
                    "message": "the document spreads fragments 6597069766571 times once they"
                    " are inlined; at most 1000",
                    "extensions": {"code": "GRAPHQL_VALIDATION_FAILED"},
                }
            ],
        },
    )
    # graphql-over-http's media type: a request error is HTTP 400.
    response_400 = await gql.http.post(
        "/graphql",
        json={"query": doubling(40)},
        headers={
            "authorization": f"Bearer {gql.token}",
            "accept": "application/graphql-response+json",
        },
    )
    assert response_400.status_code == 400


def spreads(count: int, extra: str = "") -> str:
    return "{ " + extra + " ...A" * count + " } fragment A on Query { __typename }"


def refused(message: str) -> dict[str, Any]:
    return {
        "data": None,
        "errors": [{"message": message, "extensions": {"code": "GRAPHQL_VALIDATION_FAILED"}}],
    }


async def test_fragment_spreads_at_their_exact_threshold(gql: GraphQLClient) -> None:
    typename = {"data": {"__typename": "Query"}}
    assert (await gql(spreads(1000))).body == typename
    assert (await gql(spreads(1001))).body == refused(
        "the document spreads fragments 1001 times once they are inlined; at most 1000"
    )
    # doubling(n): the operation and every fragment definition, measured inlined.
    assert (await gql(doubling(7))).body == typename  # 1 + 254 + 494 spreads
    assert (await gql(doubling(8))).body == refused(
        "the document spreads fragments 1515 times once they are inlined; at most 1000"
    )


async def test_expanded_selections_at_their_exact_threshold(
    settings: Settings, db: Database, secret_key: str
) -> None:
    async with gateway_app(settings, gateway_max_expanded_selections=21) as (_app, client):
        # 10 spreads, each inlining one selection, and the fragment's own: 21.
        response = await client.post(
            "/graphql", json={"query": spreads(10)}, headers=bearer(secret_key)
        )
        assert response.json() == {"data": {"__typename": "Query"}}
        response = await client.post(
            "/graphql", json={"query": spreads(10, "__typename")}, headers=bearer(secret_key)
        )
        assert response.json() == refused(
            "the document has 22 selections once its fragments are inlined; at most 21"
        )


def deep_through_a_fragment(pairs: int) -> str:
    """The fragment is spread at level 3, twice; it nests ``pairs`` billing/customer pairs."""
    inner = "billing { customer { " * pairs + "id" + " } }" * pairs
    return (
        "{ customers { edges { node { ...D ...D } } } }"
        f" fragment D on Customer {{ {inner} }}"
    )


async def test_depth_counts_fragments_once_and_as_before(gql: GraphQLClient) -> None:
    """Depth through fragments as strawberry's limiter counted it (a fragment adds its depth
    where it is spread), each fragment measured once; introspection fields are not counted."""
    assert (await gql(deep_through_a_fragment(4))).body == {"data": {"customers": {"edges": []}}}
    assert (await gql(deep_through_a_fragment(5))).body == {
        "data": None,
        "errors": [
            {
                "message": "'anonymous' exceeds maximum operation depth of 12",
                "extensions": {"code": "GRAPHQL_VALIDATION_FAILED"},
            }
        ],
    }
    introspection = "{ __schema { types { fields { type { ofType { ofType { ofType { ofType"
    introspection += " { ofType { ofType { ofType { name } } } } } } } } } } } }"
    assert "errors" not in (await gql(introspection)).body


async def test_the_n40_document_is_refused_while_healthz_answers(
    database_url: str, secret_key: str
) -> None:
    document = doubling(40)
    with gateway_processes(database_url, 1) as (url,):
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:

            async def attack() -> list[httpx.Response]:
                return [
                    await client.post(
                        "/graphql",
                        json={"query": document},
                        headers={"authorization": f"Bearer {secret_key}"},
                    )
                    for _ in range(20)
                ]

            async def health() -> list[tuple[int, float]]:
                answers = []
                for _ in range(20):
                    started = time.monotonic()
                    response = await client.get("/healthz")
                    answers.append((response.status_code, time.monotonic() - started))
                return answers

            refusals, answers = await asyncio.gather(attack(), health())
    assert {(r.status_code, r.json()["errors"][0]["message"]) for r in refusals} == {
        (
            200,
            "the document spreads fragments 6597069766571 times once they are inlined;"
            " at most 1000",
        )
    }
    assert [status for status, _ in answers] == [200] * 20
    assert max(elapsed for _, elapsed in answers) < 1.0
