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


def _default(arg: GraphQLArgument | GraphQLInputField) -> str | None:
    """A default value as GraphQL text, for SDL-built and code-built schemas alike."""
    node = getattr(arg.ast_node, "default_value", None) if arg.ast_node else None
    if node is not None:
        return print_ast(node)
    value = ast_from_value(arg.default_value, arg.type)
    return None if value is None else print_ast(value)


def _contract_differences() -> list[str]:
    contract = build_schema((FIXTURES / "contract.graphql").read_text())
    ours = build_gateway_schema()._schema
    problems: list[str] = []
    for name, ctype in contract.type_map.items():
        if name.startswith("__"):
            continue
        otype = ours.type_map.get(name)
        if otype is None:
            problems.append(f"missing type {name}")
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
            problems.append(f"{name}: kind {type(otype).__name__} != {type(ctype).__name__}")
            continue
        if isinstance(ctype, GraphQLObjectType | GraphQLInterfaceType):
            assert isinstance(otype, GraphQLObjectType | GraphQLInterfaceType)
            for iface in ctype.interfaces:
                if iface.name not in {i.name for i in otype.interfaces}:
                    problems.append(f"{name}: does not implement {iface.name}")
            for fname, cfield in ctype.fields.items():
                ofield = otype.fields.get(fname)
                if ofield is None:
                    problems.append(f"missing field {name}.{fname}")
                    continue
                if str(ofield.type) != str(cfield.type):
                    problems.append(f"{name}.{fname}: {ofield.type} != {cfield.type}")
                for aname, carg in cfield.args.items():
                    oarg = ofield.args.get(aname)
                    if oarg is None:
                        problems.append(f"missing argument {name}.{fname}({aname})")
                    elif str(oarg.type) != str(carg.type) or _default(oarg) != _default(carg):
                        problems.append(f"{name}.{fname}({aname}): {oarg.type} != {carg.type}")
                for aname, oarg in ofield.args.items():
                    if aname not in cfield.args and str(oarg.type).endswith("!"):
                        problems.append(f"{name}.{fname}({aname}): added argument is required")
        elif isinstance(ctype, GraphQLInputObjectType):
            assert isinstance(otype, GraphQLInputObjectType)
            if ctype.is_one_of and f"input {name} @oneOf" not in SDL_PATH.read_text():
                problems.append(f"{name}: not @oneOf")
            for fname, cfield in ctype.fields.items():
                ofield = otype.fields.get(fname)
                if ofield is None:
                    problems.append(f"missing input field {name}.{fname}")
                elif str(ofield.type) != str(cfield.type) or _default(ofield) != _default(cfield):
                    problems.append(
                        f"{name}.{fname}: {ofield.type} = {_default(ofield)}"
                        f" != {cfield.type} = {_default(cfield)}"
                    )
        elif isinstance(ctype, GraphQLEnumType):
            assert isinstance(otype, GraphQLEnumType)
            missing = set(ctype.values) - set(otype.values)
            if missing:
                problems.append(f"{name}: missing values {sorted(missing)}")
        elif isinstance(ctype, GraphQLUnionType):
            assert isinstance(otype, GraphQLUnionType)
            missing = {t.name for t in ctype.types} - {t.name for t in otype.types}
            if missing:
                problems.append(f"{name}: missing members {sorted(missing)}")
    return problems


def test_schema_contains_the_contract() -> None:
    assert _contract_differences() == []
