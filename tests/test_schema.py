"""The exported SDL is current, and the schema honours the client contract."""

from __future__ import annotations

from graphql import (
    GraphQLArgument,
    GraphQLEnumType,
    GraphQLInputField,
    GraphQLInputObjectType,
    GraphQLInterfaceType,
    GraphQLObjectType,
    GraphQLUnionType,
    ast_from_value,
    build_schema,
    print_ast,
)

from schema import SDL_PATH, export_sdl
from schema import build_schema as build_gateway_schema
from tests.conftest import FIXTURES


def test_exported_sdl_is_current() -> None:
    assert SDL_PATH.read_text() == export_sdl(), (
        "schema/schema.graphql is stale: run `billing-gateway export-schema`"
    )


def test_exported_sdl_names_its_roots() -> None:
    # Code generators (graphql-js buildSchema, graphql-codegen) read the roots from the SDL:
    # the billing type named Subscription must not be taken for the subscription root.
    built = build_schema(SDL_PATH.read_text())
    roots = [built.query_type, built.mutation_type, built.subscription_type]
    assert [None if r is None else r.name for r in roots] == [
        "Query",
        "Mutation",
        "SubscriptionRoot",
    ]
    assert built.subscription_type is not None
    assert sorted(built.subscription_type.fields) == ["usageAlerts", "usageBalance"]
    assert (
        "schema {\n  query: Query\n  mutation: Mutation\n  subscription: SubscriptionRoot\n}"
        in (SDL_PATH.read_text())
    )


def _default(arg: GraphQLArgument | GraphQLInputField) -> str | None:
    """A default value as GraphQL text, for SDL-built and code-built schemas alike."""
    node = getattr(arg.ast_node, "default_value", None) if arg.ast_node else None
    if node is not None:
        return print_ast(node)
    value = ast_from_value(arg.default_value, arg.type)
    return None if value is None else print_ast(value)


# What contract v2 (tests/fixtures/contract.graphql) has and the gateway does not offer yet,
# by the work it belongs to: a type, a field ("Type.field") or a root ("schema.<operation>").
# The test fails when an item here is implemented, so this list can only shrink; everything
# else of the contract must match now.
PENDING: dict[str, tuple[str, ...]] = {}


def _contract_differences() -> list[tuple[str, str]]:
    """(item, problem) for every difference between the contract and the schema."""
    contract = build_schema((FIXTURES / "contract.graphql").read_text())
    ours = build_gateway_schema()._schema
    problems: list[tuple[str, str]] = []
    for operation in ("query", "mutation", "subscription"):
        croot = getattr(contract, f"{operation}_type")
        oroot = getattr(ours, f"{operation}_type")
        cname = None if croot is None else croot.name
        oname = None if oroot is None else oroot.name
        if cname != oname:
            problems.append((f"schema.{operation}", f"{operation} root {oname} != {cname}"))
    for name, ctype in contract.type_map.items():
        if name.startswith("__"):
            continue
        otype = ours.type_map.get(name)
        if otype is None:
            problems.append((name, f"missing type {name}"))
            continue
        kinds = (
            GraphQLObjectType,
            GraphQLInterfaceType,
            GraphQLInputObjectType,
            GraphQLEnumType,
            GraphQLUnionType,
        )
        ckind = next((k for k in kinds if isinstance(ctype, k)), type(ctype))
        if not isinstance(otype, ckind):
            problems.append(
                (name, f"{name}: kind {type(otype).__name__} != {type(ctype).__name__}")
            )
            continue
        if isinstance(ctype, GraphQLObjectType | GraphQLInterfaceType):
            assert isinstance(otype, GraphQLObjectType | GraphQLInterfaceType)
            for iface in ctype.interfaces:
                if iface.name not in {i.name for i in otype.interfaces}:
                    problems.append((name, f"{name}: does not implement {iface.name}"))
            for fname, cfield in ctype.fields.items():
                ofield = otype.fields.get(fname)
                if ofield is None:
                    problems.append((f"{name}.{fname}", f"missing field {name}.{fname}"))
                    continue
                if str(ofield.type) != str(cfield.type):
                    problems.append(
                        (f"{name}.{fname}", f"{name}.{fname}: {ofield.type} != {cfield.type}")
                    )
                for aname, carg in cfield.args.items():
                    oarg = ofield.args.get(aname)
                    if oarg is None:
                        problems.append(
                            (f"{name}.{fname}", f"missing argument {name}.{fname}({aname})")
                        )
                    elif str(oarg.type) != str(carg.type) or _default(oarg) != _default(carg):
                        problems.append(
                            (
                                f"{name}.{fname}",
                                f"{name}.{fname}({aname}): {oarg.type} != {carg.type}",
                            )
                        )
                for aname, oarg in ofield.args.items():
                    if aname not in cfield.args and str(oarg.type).endswith("!"):
                        problems.append(
                            (
                                f"{name}.{fname}",
                                f"{name}.{fname}({aname}): added argument is required",
                            )
                        )
        elif isinstance(ctype, GraphQLInputObjectType):
            assert isinstance(otype, GraphQLInputObjectType)
            if ctype.is_one_of and f"input {name} @oneOf" not in SDL_PATH.read_text():
                problems.append((name, f"{name}: not @oneOf"))
            for fname, cfield in ctype.fields.items():
                ofield = otype.fields.get(fname)
                if ofield is None:
                    problems.append((f"{name}.{fname}", f"missing input field {name}.{fname}"))
                elif str(ofield.type) != str(cfield.type) or _default(ofield) != _default(cfield):
                    problems.append(
                        (
                            f"{name}.{fname}",
                            f"{name}.{fname}: {ofield.type} = {_default(ofield)}"
                            f" != {cfield.type} = {_default(cfield)}",
                        )
                    )
        elif isinstance(ctype, GraphQLEnumType):
            assert isinstance(otype, GraphQLEnumType)
            missing = set(ctype.values) - set(otype.values)
            if missing:
                problems.append((name, f"{name}: missing values {sorted(missing)}"))
        elif isinstance(ctype, GraphQLUnionType):
            assert isinstance(otype, GraphQLUnionType)
            missing = {t.name for t in ctype.types} - {t.name for t in otype.types}
            if missing:
                problems.append((name, f"{name}: missing members {sorted(missing)}"))
    return problems


def test_schema_contains_the_contract() -> None:
    pending = {item for items in PENDING.values() for item in items}
    problems = _contract_differences()
    assert [message for item, message in problems if item not in pending] == []
    # A pending item that now matches must leave the list.
    assert sorted(pending - {item for item, _ in problems}) == []


def test_long_quantities_are_64_bit() -> None:
    ours = build_gateway_schema()._schema
    for type_name, field in [
        ("UsageBalance", "availableBalance"),
        ("UsageBalance", "usedBalance"),
        ("UsageBalance", "reservedBalance"),
        ("InsufficientBalance", "required"),
        ("UsageCharge", "overageEvents"),
        ("UsageCharge", "units"),
        ("UsageCharge", "amount"),
        ("MoneyTotal", "amount"),
    ]:
        gtype = ours.type_map[type_name]
        assert isinstance(gtype, GraphQLObjectType)
        assert str(gtype.fields[field].type) == "Long!", (type_name, field)
    assert str(ours.type_map["UsageEvent"].fields["amount"].type) == "Int!"  # type: ignore[attr-defined]
