"""schemathesis' GraphQL fuzzing over every query and mutation of the schema: no server error.

The cases come from the exported SDL (``schema/schema.graphql``, the one clients see) and go
to the in-process app, as a secret key and as an anonymous caller, and each answer passes
schemathesis' ``not_a_server_error`` check: no 5xx, and no GraphQL error that is not a refusal
of the request (a masked ``INTERNAL_SERVER_ERROR``, an error with a path and no code, a null
in a non-null field). Every test starts from empty tables plus one pricing model and one
subscribed customer, whose slugs, external id and ids the generated strings and ids draw
from about half the time, so that mutations and lookups also reach the paths past "not found".

Bounded and repeatable: a fixed number of cases per operation and caller, derandomized (a fixed
seed, no example database).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import graphql
import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.graphql import nodes

from gateway.storage.db import Database
from tests.conftest import GraphQLClient
from tests.factories import customer_on_plan, setup_pricing

SDL = Path(__file__).parent.parent / "schema" / "schema.graphql"
# Per operation; anonymous cases are all refused before execution, so fewer say as much.
SECRET_KEY_EXAMPLES = 80
ANONYMOUS_EXAMPLES = 20

# Filled by the `world` fixture for each test: values the generated strings and ids pick from.
KNOWN_STRINGS: list[str] = []
KNOWN_IDS: list[str] = []


# Any text, NUL included: the boundary check answers it with InvalidInput naming the field
# (this fuzz first found it as an internal error in createSubscription and grantUsageCredits).
TEXT = st.text(max_size=40)


def _known_or_any(known: list[str]) -> st.SearchStrategy[graphql.StringValueNode]:
    """A value of ``known`` (read when drawn) or any text."""
    picked = st.integers(min_value=0, max_value=63).map(
        lambda i: known[i % len(known)] if known else ""
    )
    return st.one_of(picked, TEXT).map(nodes.String)


def _json_value(value: Any) -> graphql.ValueNode:
    if value is None:
        return nodes.Null
    if isinstance(value, bool):
        return nodes.Boolean(value)
    if isinstance(value, int):
        return nodes.Int(value)
    if isinstance(value, str):
        return nodes.String(value)
    return nodes.Object(
        [
            graphql.ObjectFieldNode(name=graphql.NameNode(value=k), value=_json_value(v))
            for k, v in value.items()
        ]
    )


JSON_OBJECTS = st.dictionaries(
    st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True),
    st.one_of(st.none(), st.booleans(), st.integers(), TEXT),
    max_size=4,
).map(_json_value)

schemathesis.graphql.scalar("String", _known_or_any(KNOWN_STRINGS))
schemathesis.graphql.scalar("ID", _known_or_any(KNOWN_IDS))
schemathesis.graphql.scalar("JSON", JSON_OBJECTS)

SCHEMA = schemathesis.graphql.from_path(SDL)
GRAPHQL_SCHEMA = graphql.build_schema(SDL.read_text())
OPERATIONS = {result.ok().label: result.ok() for result in SCHEMA.get_all_operations()}


def fuzz(examples: int) -> Any:
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.filter_too_much,
        ],
    )


class _OneOfRepair(graphql.Visitor):
    """Keeps one field (the first non-null one) of every @oneOf input object."""

    def __init__(self, info: graphql.TypeInfo) -> None:
        super().__init__()
        self.info = info

    def leave_object_value(self, node: graphql.ObjectValueNode, *_: Any) -> Any:
        named = graphql.get_named_type(self.info.get_input_type())
        if not isinstance(named, graphql.GraphQLInputObjectType) or not named.is_one_of:
            return None
        fields = [f for f in node.fields if not isinstance(f.value, graphql.NullValueNode)]
        return graphql.ObjectValueNode(fields=tuple((fields or list(node.fields))[:1]))


def one_key_per_one_of(body: str) -> str:
    """hypothesis-graphql does not know @oneOf and gives `UsageEventTarget` several keys most of
    the time, which validation refuses before anything runs: repaired, the case reaches the
    resolver (a @oneOf object with no non-null key stays as it is, a validation error)."""
    try:
        parsed = graphql.parse(body)
    except graphql.GraphQLSyntaxError:
        return body  # e.g. a lone surrogate in a string: the gateway gets it as it is
    info = graphql.TypeInfo(GRAPHQL_SCHEMA)
    return graphql.print_ast(
        graphql.visit(parsed, graphql.TypeInfoVisitor(info, _OneOfRepair(info)))
    )


def test_one_of_inputs_are_repaired() -> None:
    body = (
        'mutation { createUsageEvent(input: {target: {priceId: null, priceSlug: "a",'
        ' usageMeterSlug: "b"}, amount: 1}) { __typename } }'
    )
    assert one_key_per_one_of(body) == graphql.print_ast(
        graphql.parse(
            'mutation { createUsageEvent(input: {target: {priceSlug: "a"}, amount: 1})'
            " { __typename } }"
        )
    )


@pytest.fixture
async def world(gql: GraphQLClient, db: Database) -> None:
    model = await setup_pricing(gql)
    subscription_id = await customer_on_plan(gql, "user-1")
    customer_id = await db.fetchval("SELECT id::text FROM customers WHERE external_id = 'user-1'")
    meters = model["usageMeters"]
    KNOWN_STRINGS[:] = [
        "user-1",
        *(meter["slug"] for meter in meters),
        *(price["slug"] for meter in meters for price in meter["prices"]),
        "pro_monthly",
        "free_monthly",
        "monthly_generations",
        "priority_support",
    ]
    KNOWN_IDS[:] = [
        subscription_id,
        str(customer_id),
        str(model["id"]),
        *(meter["id"] for meter in meters),
        *(price["id"] for meter in meters for price in meter["prices"]),
    ]


def test_the_fuzz_covers_every_root_field() -> None:
    schema = graphql.build_schema(SDL.read_text())
    expected = {f"Query.{name}" for name in schema.query_type.fields} | {  # type: ignore[union-attr]
        f"Mutation.{name}"
        for name in schema.mutation_type.fields  # type: ignore[union-attr]
    }
    assert set(OPERATIONS) == expected


async def _check(
    http: httpx.AsyncClient, label: str, token: str | None, data: st.DataObject
) -> None:
    case = data.draw(OPERATIONS[label].as_strategy(), label="case")
    case.body = one_key_per_one_of(case.body)
    headers = {"authorization": f"Bearer {token}"} if token else {}
    # ASCII JSON (json.dumps' default): a lone surrogate travels as its \\uXXXX escape.
    response = await http.post(
        "/graphql",
        content=json.dumps({"query": case.body}).encode(),
        headers={**headers, "content-type": "application/json"},
    )
    case.validate_response(response, checks=[not_a_server_error], headers=headers)


@pytest.mark.parametrize("label", sorted(OPERATIONS))
@fuzz(SECRET_KEY_EXAMPLES)
@given(data=st.data())
async def test_no_server_error_as_a_secret_key(
    http: httpx.AsyncClient, secret_key: str, world: None, label: str, data: st.DataObject
) -> None:
    await _check(http, label, secret_key, data)


@pytest.mark.parametrize("label", sorted(OPERATIONS))
@fuzz(ANONYMOUS_EXAMPLES)
@given(data=st.data())
async def test_no_server_error_anonymous(
    http: httpx.AsyncClient, world: None, label: str, data: st.DataObject
) -> None:
    await _check(http, label, None, data)
