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
   When the root field's arguments are exactly the operation's variables, each of the
   argument's own type and without a default (``createUsageEvents(input: $input)``), steps 1
   to 3 are one coercion per variable by a coercer compiled for its type
   (``gateway.api.fast_coerce``), which makes strawberry's input objects as it goes (what
   step 3 would make of its dicts: the only conversion step 3 does is that one, its other
   converters are the identity); a value it finds invalid, or a variable not given, goes
   through steps 1 to 3 as written, whose errors are the answer.
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

import dataclasses
import importlib.metadata
import inspect
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, cast

from graphql import (
    DocumentNode,
    ExecutionResult,
    FieldNode,
    FragmentSpreadNode,
    GraphQLField,
    GraphQLInputObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    Undefined,
    VariableNode,
    located_error,
)
from graphql.execution.values import get_argument_values, get_variable_values
from graphql.utilities import get_operation_ast, type_from_ast
from strawberry.types.base import StrawberryObjectDefinition
from strawberry.types.field import StrawberryField

from gateway.api.fast_coerce import Coercer, coercer
from gateway.api.fast_plan import (
    DEFINITION,
    MAX_COERCION_ERRORS,
    Completer,
    Converter,
    FastInfo,
    NotCompilable,
    Plan,
    Run,
    implicit_fields,
    input_converter,
)

# The compiled path reads strawberry's type definitions (``strawberry.types.base``, ``.field``,
# ``.lazy_type``, ``.scalar``), which are not a documented API: a release may change them. It
# is proven on these releases (tests/test_graphql_fast.py compares its answers with
# graphql-core's, byte for byte); pyproject.toml pins one of them, and on any other release the
# schema leaves every document to graphql-core (``proven()``), while a test fails loudly.
PROVEN_STRAWBERRY = ("0.341.2",)
STRAWBERRY_VERSION = importlib.metadata.version("strawberry-graphql")


def proven() -> bool:
    """Whether the installed strawberry is one the compiled path is proven on."""
    return STRAWBERRY_VERSION in PROVEN_STRAWBERRY


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
    # (variable, python name, coercer to the input objects) per argument, when the arguments
    # are the variables
    direct: tuple[tuple[str, str, Coercer], ...] | None = None

    async def run(
        self,
        schema: GraphQLSchema,
        context: Any,
        variables: dict[str, Any] | None,
        *,
        hide_suggestions: bool = False,
    ) -> ExecutionResult:
        kwargs = self._direct(variables or {})
        coerced = None
        if kwargs is None:
            values = get_variable_values(
                schema,
                self.operation.variable_definitions or (),
                variables or {},
                max_errors=MAX_COERCION_ERRORS,
                hide_suggestions=hide_suggestions,
            )
            if isinstance(values, list):
                return ExecutionResult(data=None, errors=values)
            coerced = values
        try:
            if kwargs is None:
                raw = get_argument_values(self.field, self.node, coerced)
                kwargs = {
                    python: convert(raw[graphql])
                    for graphql, python, convert in self.arguments
                    if graphql in raw
                }
            value = await self.resolver(info=FastInfo(context, self.node.name.value), **kwargs)
            run = Run(context)
            data = {self.key: self.complete(value, run)}
            await run.settle()
        except Exception as exc:  # reported as graphql-core reports a resolver's error
            error = located_error(exc, [self.node], [self.key])
            return ExecutionResult(data=None, errors=[error])
        return ExecutionResult(data=data, errors=None)

    def _direct(self, variables: dict[str, Any]) -> dict[str, Any] | None:
        """The resolver's arguments by the compiled coercers, or None: graphql-core coerces
        them."""
        if self.direct is None:
            return None
        kwargs: dict[str, Any] = {}
        for variable, python, coerce in self.direct:
            value = variables.get(variable, Undefined)
            try:
                coerced = Undefined if value is Undefined else coerce(value)
            except Exception:  # an input type's own check (strawberry's oneOf): as below
                return None
            if coerced is Undefined:
                return None
            kwargs[python] = coerced
        return kwargs


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
        # The request ran this plan: every check before execution passed for its document and
        # caller (gateway.api.compiled_lane answers the same text and kind of caller next time).
        if hasattr(context_value, "compiled"):
            context_value.compiled = plan
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
                input_converter(argument.type, self.names, self.leaves),
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
            complete=Plan(self.schema).completer(field.type, [node]),
            direct=self._direct_arguments(
                operation, node, field, {graphql: python for graphql, python, _ in arguments}
            ),
        )

    def _direct_arguments(
        self,
        operation: OperationDefinitionNode,
        node: FieldNode,
        field: GraphQLField,
        python_names: dict[str, str],
    ) -> tuple[tuple[str, str, Coercer], ...] | None:
        """CompiledOperation.direct: when every argument of the field is given as a variable
        of its own type, each variable used once, none with a default, and no other
        variable is defined (coercing the variables then is coercing the arguments)."""
        definitions = operation.variable_definitions or ()
        given = {a.name.value: a.value for a in node.arguments or ()}
        if set(given) != set(field.args) or set(given) != set(python_names):
            return None
        if any(d.default_value for d in definitions):
            return None
        types = {d.variable.name.value: d.type for d in definitions}
        direct = []
        for name, value in given.items():
            if not isinstance(value, VariableNode) or value.name.value not in types:
                return None
            argument = field.args[name]
            variable_type = type_from_ast(self.schema, types.pop(value.name.value))
            coerce = coercer(argument.type, build=self._input_object)
            if str(variable_type) != str(argument.type) or coerce is None:
                return None
            direct.append((value.name.value, python_names[name], coerce))
        return None if types else tuple(direct)

    def _input_object(
        self, type_: GraphQLInputObjectType
    ) -> Callable[[dict[str, Any]], Any] | None:
        """How ``convert_argument`` (``input_converter``) makes this type's coerced dict into
        its strawberry input object, its fields being made already; None when it is not
        strawberry's plain input type."""
        definition = (type_.extensions or {}).get(DEFINITION)
        if (
            not isinstance(definition, StrawberryObjectDefinition)
            or not definition.is_input
            or definition.from_input is not None
            or any(f.out_name for f in type_.fields.values())
        ):
            return None
        names = {self.names.from_field(f): f.python_name for f in definition.fields}
        if set(names) != set(type_.fields):
            return None
        implicit = implicit_fields(definition)
        make = definition.origin

        def input_object(coerced: dict[str, Any]) -> Any:
            kwargs = dict(implicit)
            for key, value in coerced.items():
                kwargs[names[key]] = value
            return make(**kwargs)

        return input_object


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
