"""The compiled path's building blocks: argument converters and selection plans.

``input_converter`` does for one input type what strawberry's ``convert_argument`` does,
built once per type. ``Plan`` compiles a selection set into a completer that serialises
leaves with the schema's own scalar and enum types, resolves abstract types by the strawberry
type of the value, and runs loader fields level by level (``Run.settle``) so DataLoaders
batch as under graphql-core. Used by ``gateway.api.graphql_fast``.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, cast

from graphql import (
    FieldNode,
    GraphQLEnumType,
    GraphQLField,
    GraphQLInterfaceType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLScalarType,
    GraphQLSchema,
    GraphQLUnionType,
    InlineFragmentNode,
    SelectionSetNode,
)
from strawberry.types.base import (
    StrawberryList,
    StrawberryOptional,
    has_object_definition,
)
from strawberry.types.field import StrawberryField
from strawberry.types.lazy_type import LazyType
from strawberry.types.scalar import ScalarDefinition, ScalarWrapper

DEFINITION = "strawberry-definition"  # GraphQLCoreConverter.DEFINITION_BACKREF
MAX_COERCION_ERRORS = 50  # graphql-core's execute() default


class NotCompilable(Exception):
    """The document uses something the compiled path does not handle: graphql-core runs it."""


@dataclasses.dataclass(frozen=True)
class FastInfo:
    """What a registered resolver may read of its ``info``."""

    context: Any
    field_name: str


# ------------------------------------------------------------------ arguments


Converter = Callable[[Any], Any]


def _identity(value: Any) -> Any:
    return value


def implicit_fields(definition: Any) -> dict[str, None]:
    """An input type's fields that ``convert_argument`` sets to None when not given: those
    without a default of their own."""
    return {
        f.python_name: None
        for f in definition.fields
        if f.default_value is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }


def input_converter(type_: Any, names: Any, leaves: Any) -> Converter:
    """A function doing what strawberry's ``convert_argument`` does for this type."""
    if isinstance(type_, LazyType):
        return input_converter(type_.resolve_type(), names, leaves)
    if isinstance(type_, StrawberryOptional):
        inner = input_converter(type_.of_type, names, leaves)
        return lambda value: None if value is None else inner(value)
    if isinstance(type_, StrawberryList):
        item = input_converter(type_.of_type, names, leaves)
        if item is _identity:
            return lambda value: None if value is None else list(value)
        return lambda value: None if value is None else [item(x) for x in value]
    if type_ in leaves or isinstance(type_, ScalarDefinition | ScalarWrapper):
        return _identity  # the scalar registry holds the built-in scalars too
    if has_object_definition(type_):
        definition = type_.__strawberry_definition__
        if not definition.is_input or definition.from_input is not None:
            raise NotCompilable(f"input type {definition.name}")
        implicit = implicit_fields(definition)
        fields = [
            (names.from_field(f), f.python_name, input_converter(f.type, names, leaves))
            for f in definition.fields
        ]

        def convert(value: Any) -> Any:
            if value is None:
                return None
            kwargs = dict(implicit)
            for graphql_name, python_name, field_converter in fields:
                if graphql_name in value:
                    kwargs[python_name] = field_converter(value[graphql_name])
            return type_(**kwargs)

        return convert
    raise NotCompilable(f"argument type {type_!r}")


# ------------------------------------------------------------------ results


class Run:
    """One execution's state: the context, and async fields still to fill in."""

    __slots__ = ("context", "pending")

    def __init__(self, context: Any) -> None:
        self.context = context
        self.pending: list[Awaitable[None]] = []

    async def settle(self) -> None:
        """Resolve the async fields level by level, each level concurrently (so DataLoaders
        batch them, as under graphql-core); the first error is raised."""
        while self.pending:
            level, self.pending = self.pending, []
            for outcome in await asyncio.gather(*level, return_exceptions=True):
                if isinstance(outcome, BaseException):
                    raise outcome


Completer = Callable[[Any, Run], Any]
Getter = Callable[[Any, Run], Any]


def _leaf(value: Any, _run: Run) -> Any:
    return value


class Plan:
    """Compiles the completion of one return type for a list of field nodes."""

    def __init__(self, schema: GraphQLSchema) -> None:
        self.schema = schema

    def completer(self, type_: GraphQLOutputType, nodes: Sequence[FieldNode]) -> Completer:
        if isinstance(type_, GraphQLNonNull):
            inner = self.completer(type_.of_type, nodes)

            def non_null(value: Any, run: Run) -> Any:
                if value is None:
                    raise TypeError(f"Cannot return null for non-nullable type {type_}.")
                return inner(value, run)

            return non_null
        if isinstance(type_, GraphQLList):
            item = self.completer(type_.of_type, nodes)
            return lambda value, run: None if value is None else [item(x, run) for x in value]
        if isinstance(type_, GraphQLScalarType | GraphQLEnumType):
            serialize = type_.serialize
            return lambda value, _run: None if value is None else serialize(value)
        if isinstance(type_, GraphQLObjectType):
            return self._object(type_, nodes)
        if isinstance(type_, GraphQLUnionType | GraphQLInterfaceType):
            by_name = {
                t.name: self._object(t, nodes) for t in self.schema.get_possible_types(type_)
            }

            def abstract(value: Any, run: Run) -> Any:
                if value is None:
                    return None
                return by_name[value.__strawberry_definition__.name](value, run)

            return abstract
        raise NotCompilable(f"type {type_}")

    def _object(self, type_: GraphQLObjectType, nodes: Sequence[FieldNode]) -> Completer:
        fields: list[tuple[str, bool, Getter, Completer]] = []
        for key, field_nodes in self._collect(type_, [n.selection_set for n in nodes]).items():
            name = field_nodes[0].name.value
            if name == "__typename":
                fields.append((key, False, _typename(type_.name), _leaf))
                continue
            field = type_.fields.get(name)
            if field is None or field.args:
                raise NotCompilable(f"field {type_.name}.{name}")
            is_async, get = _getter(field, name)
            fields.append((key, is_async, get, self.completer(field.type, field_nodes)))

        def complete(value: Any, run: Run) -> Any:
            if value is None:
                return None
            out: dict[str, Any] = {}
            for key, is_async, get, completer in fields:
                if is_async:
                    out[key] = None  # keeps the selection's order; filled in by settle()
                    run.pending.append(_fill(out, key, get(value, run), completer, run))
                else:
                    out[key] = completer(get(value, run), run)
            return out

        return complete

    def _collect(
        self, type_: GraphQLObjectType, selection_sets: Iterable[SelectionSetNode | None]
    ) -> OrderedDict[str, list[FieldNode]]:
        collected: OrderedDict[str, list[FieldNode]] = OrderedDict()
        for selection_set in selection_sets:
            if selection_set is None:
                raise NotCompilable("a composite field without a selection")
            for selection in selection_set.selections:
                if selection.directives:
                    raise NotCompilable("directives")
                if isinstance(selection, FieldNode):
                    key = (selection.alias or selection.name).value
                    collected.setdefault(key, []).append(selection)
                elif isinstance(selection, InlineFragmentNode):
                    if self._applies(selection, type_):
                        for key, more in self._collect(type_, [selection.selection_set]).items():
                            collected.setdefault(key, []).extend(more)
                else:  # FragmentSpreadNode
                    raise NotCompilable("named fragments")
        return collected

    def _applies(self, fragment: InlineFragmentNode, type_: GraphQLObjectType) -> bool:
        if fragment.type_condition is None:
            return True
        condition = self.schema.get_type(fragment.type_condition.name.value)
        if condition is type_:
            return True
        if isinstance(condition, GraphQLUnionType | GraphQLInterfaceType):
            return self.schema.is_sub_type(condition, type_)
        return False


def _typename(name: str) -> Getter:
    return lambda _value, _run: name


async def _fill(
    out: dict[str, Any], key: str, pending: Awaitable[Any], completer: Completer, run: Run
) -> None:
    out[key] = completer(await pending, run)


def _getter(field: GraphQLField, name: str) -> tuple[bool, Getter]:
    """How strawberry reads this field of an object: (is async, getter)."""
    definition = (field.extensions or {}).get(DEFINITION)
    if not isinstance(definition, StrawberryField) or definition.extensions:
        raise NotCompilable("a field with extensions")
    if getattr(definition, "permission_classes", None):
        raise NotCompilable("a field with permissions")
    resolver = definition.base_resolver
    if resolver is None:
        attribute = definition.python_name
        return False, lambda value, _run: getattr(value, attribute)
    info = resolver.info_parameter
    if resolver.arguments or resolver.self_parameter is None:
        raise NotCompilable(f"field {name} needs graphql-core")
    func = cast(Callable[..., Any], resolver.wrapped_func)
    if info is None and not resolver.is_async:
        return False, lambda value, _run: func(value)
    if info is not None and info.name == "info" and resolver.is_async:
        return True, lambda value, run: func(value, info=FastInfo(run.context, name))
    raise NotCompilable(f"field {name} needs graphql-core")


# ------------------------------------------------------------------ documents
