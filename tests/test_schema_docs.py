"""Every type, field, argument, input field and enum value of the schema has a description:
it is what GraphiQL's docs pane and every generated client show."""

from __future__ import annotations

from graphql import (
    GraphQLEnumType,
    GraphQLInputObjectType,
    GraphQLInterfaceType,
    GraphQLObjectType,
    GraphQLSchema,
    GraphQLUnionType,
)

from gateway.api.graphiql import DEFAULT_QUERY
from schema import build_schema
from tests.conftest import GraphQLClient
from tests.factories import customer_on_plan, ok, session_token, setup_pricing

BUILT_IN_SCALARS = {"String", "Int", "Float", "Boolean", "ID"}


def undocumented(schema: GraphQLSchema) -> list[str]:
    """Coordinates (``Type``, ``Type.field``, ``Type.field(arg:)``, ``Enum.VALUE``) that have
    no description, built-in scalars and introspection types excepted."""
    missing: list[str] = []

    def check(coordinate: str, description: str | None) -> None:
        if not (description or "").strip():
            missing.append(coordinate)

    for name, gtype in sorted(schema.type_map.items()):
        if name.startswith("__") or name in BUILT_IN_SCALARS:
            continue
        check(name, gtype.description)
        if isinstance(gtype, GraphQLObjectType | GraphQLInterfaceType):
            for fname, field in gtype.fields.items():
                check(f"{name}.{fname}", field.description)
                for aname, arg in field.args.items():
                    check(f"{name}.{fname}({aname}:)", arg.description)
        elif isinstance(gtype, GraphQLInputObjectType):
            for fname, input_field in gtype.fields.items():
                check(f"{name}.{fname}", input_field.description)
        elif isinstance(gtype, GraphQLEnumType):
            for vname, value in gtype.values.items():
                check(f"{name}.{vname}", value.description)
        elif isinstance(gtype, GraphQLUnionType):
            pass  # the members are documented as types
    return missing


def test_everything_in_the_schema_is_described() -> None:
    missing = undocumented(build_schema()._schema)
    assert missing == [], (
        f"{len(missing)} schema elements have no description (add one written for the client"
        " developer: what it is, units, who may call it, what null means):\n  "
        + "\n  ".join(missing)
    )


async def test_graphiql_s_default_query_works_for_both_kinds_of_caller(gql: GraphQLClient) -> None:
    await setup_pricing(gql)
    await customer_on_plan(gql)
    token = await session_token(gql, "user-1")
    as_customer = ok(await gql(DEFAULT_QUERY, token=token), "billing")
    as_key = ok(await gql(DEFAULT_QUERY, {"customer": "user-1"}), "billing")
    assert as_customer == as_key
    assert as_customer["customer"] == {"externalId": "user-1"}
    slugs = [b["usageMeter"]["slug"] for b in as_customer["usageBalances"]]
    assert slugs == ["generations", "unique_users"]  # the meters with a balance on pro_monthly
    # a secret key that names no customer: null, and the answer says why
    unnamed = await gql(DEFAULT_QUERY)
    assert (unnamed.status, unnamed.body) == (
        200,
        {
            "data": {"billing": None},
            "extensions": {
                "warnings": [
                    "billing: a secret key must name the customer with customerExternalId;"
                    " without it the answer is null (a customer session token reads its own)"
                ]
            },
        },
    )
    # a customer token gets no warning
    assert "extensions" not in (await gql(DEFAULT_QUERY, token=token)).body
