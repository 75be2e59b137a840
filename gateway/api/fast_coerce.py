"""Variables coerced as graphql-core's ``coerce_input_value`` coerces them, the type dispatch done
once per type instead of once per value.

Under bench 2 (batches of 100 events) graphql-core's ``get_variable_values`` was about a tenth
of a worker's CPU (issue #16): for every value it asks again whether its type is non-null, a
list, an input object or a leaf, and looks up fields by name. ``coercer(type)`` returns a
function that does the same steps for that type, in the same order, with the same leaf
functions (the scalar's or enum's own ``coerce_input_value``), and returns ``Undefined`` where
graphql-core returns ``Undefined`` (the value is invalid). It never reports why: on
``Undefined`` the caller runs graphql-core's own coercion, whose errors are the answer.

A type is compiled only when its coercion has no state to share: input fields' defaults must
be immutable internal values (``default_value``; an external ``default`` is coerced and
memoised by graphql-core, and is left to it), and nesting stays under graphql-core's
``MAX_NESTING_DEPTH`` by construction (types of bounded depth: graphql-core's nesting check can
then never fire). ``None`` means the type is not compiled. ``tests/test_fast_coerce.py``
compares the two on generated values.

``build`` makes each input object what the caller wants instead of graphql-core's dict:
``build(type)`` returns a function of the coerced dict (after the type's own ``out_type``,
which may check and refuse it), or None (the type is not compiled). The compiled path uses it
to coerce straight to strawberry's input objects (``gateway.api.graphql_fast``).

Hand-written: graphql-core has no compiled coercion (its ``coerce_input_value`` is the
generic interpreter).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from graphql import (
    GraphQLEnumType,
    GraphQLInputObjectType,
    GraphQLInputType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLScalarType,
    Undefined,
    is_required_input_field,
)
from graphql.pyutils import is_iterable

Coercer = Callable[[Any], Any]
Build = Callable[[GraphQLInputObjectType], Callable[[dict[str, Any]], Any] | None]

# Far below graphql-core's MAX_NESTING_DEPTH (200): a deeper type is left to graphql-core.
MAX_DEPTH = 32
IMMUTABLE = (bool, int, float, str, type(None))


def coercer(type_: GraphQLInputType, depth: int = 0, build: Build | None = None) -> Coercer | None:
    """``coerce_input_value(value, type_)`` for this type, or None (not compiled); input
    objects made by ``build`` when given."""
    if depth > MAX_DEPTH:
        return None
    if isinstance(type_, GraphQLNonNull):
        inner = coercer(type_.of_type, depth, build)
        if inner is None:
            return None
        of_type = inner  # (a name mypy knows is not None inside the closure)

        def non_null(value: Any) -> Any:
            if value is None or value is Undefined:
                return Undefined
            return of_type(value)

        return non_null
    if isinstance(type_, GraphQLList):
        item = coercer(type_.of_type, depth + 1, build)
        return None if item is None else _list(item)
    if isinstance(type_, GraphQLInputObjectType):
        return _input_object(type_, depth, build)
    if isinstance(type_, GraphQLScalarType | GraphQLEnumType):
        return _leaf(type_)
    return None


def _list(item: Coercer) -> Coercer:
    def list_(value: Any) -> Any:
        if value is None or value is Undefined:
            return None
        if not is_iterable(value):  # a non-list value is a list of one
            one = item(value)
            return Undefined if one is Undefined else [one]
        coerced: list[Any] = []
        append = coerced.append
        for x in value:
            c = item(x)
            if c is Undefined:
                return Undefined
            append(c)
        return coerced

    return list_


def _input_object(type_: GraphQLInputObjectType, depth: int, build: Build | None) -> Coercer | None:
    # (name, key in the result, coercer, required, default: Undefined when none)
    fields: list[tuple[str, str, Coercer, bool, Any]] = []
    for name, field in type_.fields.items():
        if field.default is not None:
            return None  # an external default: coerced and memoised by graphql-core
        default = field.default_value
        if default is not Undefined and not isinstance(default, IMMUTABLE):
            return None
        coerce = coercer(field.type, depth + 1, build)
        if coerce is None:
            return None
        fields.append(
            (name, field.out_name or name, coerce, is_required_input_field(field), default)
        )
    names = frozenset(type_.fields)
    one_of = type_.is_one_of
    out_type: Callable[[dict[str, Any]], Any] = type_.out_type
    if build is not None:
        make = build(type_)
        if make is None:
            return None
        if out_type is GraphQLInputObjectType.out_type:  # graphql-core's: the dict as it is
            out_type = make
        else:
            out_type = _checked_then(out_type, make)

    def input_object(value: Any) -> Any:
        if value is None or value is Undefined:
            return None
        if not isinstance(value, dict):
            return Undefined
        defined = 0
        for name, given in value.items():
            if given is Undefined:
                continue
            defined += 1
            if name not in names:
                return Undefined
        coerced: dict[str, Any] = {}
        get = value.get
        for name, key, coerce, required, default in fields:
            given = get(name, Undefined)
            if given is Undefined:
                if required:
                    return Undefined
                if default is not Undefined:
                    coerced[key] = default
            else:
                c = coerce(given)
                if c is Undefined:
                    return Undefined
                coerced[key] = c
        if one_of:
            if defined != 1 or len(coerced) != 1:
                return Undefined
            if next(iter(coerced.values())) is None:
                return Undefined
        return out_type(coerced)

    return input_object


def _checked_then(
    checked: Callable[[dict[str, Any]], Any], make: Callable[[dict[str, Any]], Any]
) -> Callable[[dict[str, Any]], Any]:
    return lambda coerced: make(checked(coerced))


def _leaf(type_: GraphQLScalarType | GraphQLEnumType) -> Coercer:
    coerce = type_.coerce_input_value

    def leaf(value: Any) -> Any:
        if value is None or value is Undefined:
            return None
        try:
            return coerce(value)
        except Exception:  # invalid: graphql-core's coercion reports it
            return Undefined

    return leaf
