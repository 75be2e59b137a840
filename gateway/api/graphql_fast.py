"""A compiled execution path for the hot mutations (createUsageEvent, createUsageEvents).

graphql-core's executor is general: for every request it builds resolve infos, converts the
arguments into strawberry input objects through type introspection, and completes the result
field by field through layers of hooks. For a batch of 100 events that is about three quarters
of the server's CPU (bench/RESULTS.md). This module executes the same documents with the work
that does not depend on the request done once per document.

Only the execution step is replaced. Parsing, validation, the depth/alias/token limits, the
root-field gate, metrics and error masking are strawberry's schema extensions, and they run
unchanged around this executor, exactly as around graphql-core's.

A document is compiled when it is one mutation whose only root field is a registered field
(one whose resolver only reads ``info.context``), with no directives and no named fragments,
and whose selected fields take no arguments and are read as strawberry reads them: an
attribute, a method of the object, or an async method of the object and ``info`` (a DataLoader
field; these run level by level, concurrently, so that loaders batch as under graphql-core). Every other document, and every document the compiler
does not fully understand, runs through graphql-core as before: the compiled path is an
optimisation, never a different answer. The plans are cached per parsed document (the parser
cache hands out the same document object for the same query text) and operation name.

A compiled run does what graphql-core does, in the same order and with the same functions:

1. graphql-core's ``get_variable_values`` coerces the variables. On errors, nothing executes.
2. graphql-core's ``get_argument_values`` coerces the arguments.
3. The arguments become strawberry input objects, like strawberry's ``convert_argument``, with
   a converter built once per type.
4. The field's own resolver runs.
5. The result is completed by the compiled selection plan. Leaves are serialised by the
   schema's own scalar and enum types, and abstract types are resolved by the strawberry type
   of the value.

A resolver error becomes a located error on the root field with ``data: null``, as
graphql-core reports an error on a non-null root field. An error in a nested field (a bug:
these fields read data already loaded) also nulls the whole root field, where graphql-core
would null the nearest nullable parent; both mask it the same way.
``tests/test_graphql_fast.py`` compares both paths answer for answer.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, cast

from graphql import (
    DocumentNode,
    ExecutionResult,
    FieldNode,
    FragmentSpreadNode,
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
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    located_error,
)
from graphql.execution.values import get_argument_values, get_variable_values
from graphql.utilities import get_operation_ast
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


def _input_converter(type_: Any, names: Any, leaves: Any) -> Converter:
    """A function doing what strawberry's ``convert_argument`` does for this type."""
    if isinstance(type_, LazyType):
        return _input_converter(type_.resolve_type(), names, leaves)
    if isinstance(type_, StrawberryOptional):
        inner = _input_converter(type_.of_type, names, leaves)
        return lambda value: None if value is None else inner(value)
    if isinstance(type_, StrawberryList):
        item = _input_converter(type_.of_type, names, leaves)
        if item is _identity:
            return lambda value: None if value is None else list(value)
        return lambda value: None if value is None else [item(x) for x in value]
    if type_ in leaves or isinstance(type_, ScalarDefinition | ScalarWrapper):
        return _identity  # the scalar registry holds the built-in scalars too
    if has_object_definition(type_):
        definition = type_.__strawberry_definition__
        if not definition.is_input or definition.from_input is not None:
            raise NotCompilable(f"input type {definition.name}")
        implicit = {
            f.python_name: None
            for f in definition.fields
            if f.default_value is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        }
        fields = [
            (names.from_field(f), f.python_name, _input_converter(f.type, names, leaves))
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


class _Run:
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


Completer = Callable[[Any, _Run], Any]
Getter = Callable[[Any, _Run], Any]


def _leaf(value: Any, _run: _Run) -> Any:
    return value


class _Plan:
    """Compiles the completion of one return type for a list of field nodes."""

    def __init__(self, schema: GraphQLSchema) -> None:
        self.schema = schema

    def completer(self, type_: GraphQLOutputType, nodes: Sequence[FieldNode]) -> Completer:
        if isinstance(type_, GraphQLNonNull):
            inner = self.completer(type_.of_type, nodes)

            def non_null(value: Any, run: _Run) -> Any:
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

            def abstract(value: Any, run: _Run) -> Any:
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

        def complete(value: Any, run: _Run) -> Any:
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
    out: dict[str, Any], key: str, pending: Awaitable[Any], completer: Completer, run: _Run
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


@dataclasses.dataclass(frozen=True)
class CompiledOperation:
    document: DocumentNode  # kept to check the cache key (an id) against reuse
    operation: OperationDefinitionNode
    node: FieldNode
    key: str
    field: GraphQLField
    resolver: Callable[..., Awaitable[Any]]
    arguments: list[tuple[str, str, Converter]]  # (graphql name, python name, converter)
    complete: Completer

    async def run(
        self,
        schema: GraphQLSchema,
        context: Any,
        variables: dict[str, Any] | None,
        *,
        hide_suggestions: bool = False,
    ) -> ExecutionResult:
        coerced = get_variable_values(
            schema,
            self.operation.variable_definitions or (),
            variables or {},
            max_errors=MAX_COERCION_ERRORS,
            hide_suggestions=hide_suggestions,
        )
        if isinstance(coerced, list):
            return ExecutionResult(data=None, errors=coerced)
        try:
            raw = get_argument_values(self.field, self.node, coerced)
            kwargs = {
                python: convert(raw[graphql])
                for graphql, python, convert in self.arguments
                if graphql in raw
            }
            value = await self.resolver(info=FastInfo(context, self.node.name.value), **kwargs)
            run = _Run(context)
            data = {self.key: self.complete(value, run)}
            await run.settle()
        except Exception as exc:  # reported as graphql-core reports a resolver's error
            error = located_error(exc, [self.node], [self.key])
            return ExecutionResult(data=None, errors=[error])
        return ExecutionResult(data=data, errors=None)


class FastExecutor:
    """graphql-core's ``execute``, with compiled runs for documents of registered fields."""

    def __init__(
        self,
        schema: GraphQLSchema,
        fields: Iterable[str],
        fallback: Callable[..., Any],
        *,
        names: Any,
        leaves: Any,
        maxsize: int = 256,
    ) -> None:
        self.schema = schema
        self.fields = frozenset(fields)
        self.fallback = fallback
        self.names = names  # strawberry's NameConverter
        self.leaves = leaves
        self.maxsize = maxsize
        self._plans: OrderedDict[tuple[int, str | None], CompiledOperation | None] = OrderedDict()

    def execute(
        self,
        schema: GraphQLSchema,
        document: DocumentNode,
        root_value: Any = None,
        context_value: Any = None,
        variable_values: dict[str, Any] | None = None,
        operation_name: str | None = None,
        **kwargs: Any,
    ) -> Any:
        plan = self.plan(document, operation_name) if schema is self.schema else None
        if plan is None:
            return self.fallback(
                schema,
                document,
                root_value=root_value,
                context_value=context_value,
                variable_values=variable_values,
                operation_name=operation_name,
                **kwargs,
            )
        return plan.run(
            schema,
            context_value,
            variable_values,
            hide_suggestions=bool(kwargs.get("hide_suggestions", False)),
        )

    def plan(self, document: DocumentNode, operation_name: str | None) -> CompiledOperation | None:
        key = (id(document), operation_name)
        if key in self._plans:
            plan = self._plans[key]
            if plan is None or plan.document is document:
                self._plans.move_to_end(key)
                return plan
        try:
            plan = self._compile(document, operation_name)
        except NotCompilable:
            plan = None
        self._plans[key] = plan
        if len(self._plans) > self.maxsize:
            self._plans.popitem(last=False)
        return plan

    def _compile(self, document: DocumentNode, operation_name: str | None) -> CompiledOperation:
        if any(not isinstance(d, OperationDefinitionNode) for d in document.definitions):
            raise NotCompilable("fragment definitions")
        operation = get_operation_ast(document, operation_name)
        if operation is None or operation.operation is not OperationType.MUTATION:
            raise NotCompilable("not one mutation")
        if operation.directives or any(v.directives for v in operation.variable_definitions or ()):
            raise NotCompilable("directives")
        selections = operation.selection_set.selections
        if len(selections) != 1 or not isinstance(selections[0], FieldNode):
            raise NotCompilable("not one root field")
        node = selections[0]
        if node.directives or node.name.value not in self.fields:
            raise NotCompilable("not a registered field")
        if _has_spread(node.selection_set):
            raise NotCompilable("named fragments")
        root = self.schema.mutation_type
        assert root is not None
        field = root.fields[node.name.value]
        definition = (field.extensions or {}).get(DEFINITION)
        if not isinstance(definition, StrawberryField) or definition.base_resolver is None:
            raise NotCompilable("no resolver")
        resolver = definition.base_resolver
        info = resolver.info_parameter
        if (
            definition.extensions
            or not resolver.is_async
            or info is None
            or info.name != "info"
            or info.kind is inspect.Parameter.POSITIONAL_ONLY
        ):
            raise NotCompilable("the resolver is not a plain async function of info")
        arguments = [
            (
                self.names.from_argument(argument),
                argument.python_name,
                _input_converter(argument.type, self.names, self.leaves),
            )
            for argument in resolver.arguments
        ]
        return CompiledOperation(
            document=document,
            operation=operation,
            node=node,
            key=(node.alias or node.name).value,
            field=field,
            resolver=cast(Callable[..., Awaitable[Any]], resolver.wrapped_func),
            arguments=arguments,
            complete=_Plan(self.schema).completer(field.type, [node]),
        )


def _has_spread(selection_set: SelectionSetNode | None) -> bool:
    if selection_set is None:
        return False
    for selection in selection_set.selections:
        if isinstance(selection, FragmentSpreadNode):
            return True
        if isinstance(selection, FieldNode | InlineFragmentNode) and _has_spread(
            selection.selection_set
        ):
            return True
    return False
