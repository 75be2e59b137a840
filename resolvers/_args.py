"""Argument helpers shared by the resolvers, and the one check of every input's text.

PostgreSQL refuses text holding a NUL character (``text`` and ``jsonb`` alike), and UTF-8
encoders (asyncpg's, orjson's) refuse lone surrogates; an aware datetime near the ends of
Python's range cannot be converted to UTC, as asyncpg does to send it. Any of these reaching
the database layer would end as a masked internal error, so every argument is checked once
here, before a resolver runs: ``checked_input`` for mutations (the answer is ``InvalidInput``
naming the input field) and ``checked_arguments`` for queries without an error union (a
top-level ``BAD_USER_INPUT`` error naming the argument). A batch resolver checks each item
with ``refused_input`` so that a bad item fails alone.

The walk is iterative (JSON values may nest as deep as the request parser allows) and visits
each value once: its work is linear in the size of the arguments, which the body limit bounds.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncGenerator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import strawberry
from strawberry.types import has_object_definition
from strawberry.utils.str_converters import to_camel_case

from gateway.errors import BadUserInput, UserError, invalid

T = TypeVar("T")
R = TypeVar("R", bound=Callable[..., Awaitable[Any]])

CHECKED = "__text_checked__"  # set on every resolver wrapped here (tests check all are)


def opt(value: T | None) -> T | None:
    """An optional argument or input field: omitted (UNSET) and null both mean None."""
    return None if value is strawberry.UNSET else value


def text_problem(text: str) -> str | None:
    """Why PostgreSQL or a UTF-8 encoder would refuse this text; None when it is fine."""
    if "\x00" in text:
        return "must not contain a NUL character (U+0000)"
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return "must not contain a lone surrogate (U+D800 to U+DFFF)"
    return None


def _datetime_problem(value: datetime) -> str | None:
    if value.tzinfo is None:
        return None  # read as UTC: always representable
    try:
        value.astimezone(UTC)
    except OverflowError:
        return "is out of the representable range of dates"
    return None


# A path as a linked list (parent, key): the walk shares each parent's path instead of
# copying it per value, which would cost depth x size.
_Path = tuple[Any, str] | None


def _unlink(at: _Path) -> list[str]:
    keys: list[str] = []
    while at is not None:
        at, key = at
        keys.append(key)
    return keys[::-1]


# The fields of each input type, in reverse (the walk's stack pops them in order): computed
# once per class, a bounded set (the schema's input types).
_INPUT_FIELDS: dict[type, tuple[tuple[str, str], ...]] = {}


def _input_fields(cls: type) -> tuple[tuple[str, str], ...]:
    fields = _INPUT_FIELDS.get(cls)
    if fields is None:
        fields = ()
        if has_object_definition(cls):
            fields = tuple(
                (f.python_name, f.graphql_name or to_camel_case(f.python_name))
                for f in reversed(cls.__strawberry_definition__.fields)
            )
        _INPUT_FIELDS[cls] = fields
    return fields


def _plainly_fine(value: Any, depth: int = 2) -> bool:
    """True when ``value`` is an input object whose fields are numbers, booleans, nulls, ASCII
    text without NUL, or such input objects (``depth`` levels): nothing there can be refused.
    Anything else (JSON values, lists, dates, other text) is left to the walk. This is the
    shape of nearly every usage event (its target an input object of one slug or id), and
    the walk's stack costs about three times as much as reading the fields."""
    fields = _input_fields(type(value))
    if not fields:
        return False
    for python_name, _ in fields:
        inner = getattr(value, python_name)
        kind = type(inner)
        if (
            inner is None
            or inner is strawberry.UNSET
            or kind is int
            or kind is bool
            or kind is float
        ):
            continue
        if isinstance(inner, str):
            if "\x00" in inner or not inner.isascii():
                return False
        elif depth == 0 or not _plainly_fine(inner, depth - 1):
            return False
    return True


def refused_input(value: Any, path: list[str]) -> UserError | None:
    """``InvalidInput`` for the first string or date in ``value`` the database would refuse.

    ``value`` is an argument as strawberry hands it over: text, numbers, dates, lists, JSON
    values (dicts; their keys are text too) and strawberry input objects. ``path`` is where
    it sits (``["input"]``, ``["input", "3"]`` for an item); the message names the field
    from there, the error's ``field`` in full.
    """
    if _plainly_fine(value):
        return None
    stack: list[tuple[Any, _Path]] = [(value, None)]
    while stack:
        item, at = stack.pop()
        problem: str | None = None
        kind = type(item)
        if kind is str:
            problem = text_problem(item)
        elif kind is int or kind is bool or kind is float or item is None:
            continue
        elif kind is dict:
            for key, inner in reversed(list(item.items())):
                key_problem = text_problem(key) if isinstance(key, str) else None
                if key_problem is not None:
                    problem = f"has a key that {key_problem}"
                    break
                stack.append((inner, (at, str(key))))
        elif kind is list or kind is tuple:
            stack.extend((inner, (at, str(i))) for i, inner in reversed(list(enumerate(item))))
        elif isinstance(item, str):  # strawberry.ID and other str subclasses
            problem = text_problem(item)
        elif isinstance(item, datetime):
            problem = _datetime_problem(item)
        else:
            for python_name, graphql_name in _input_fields(kind):
                inner = getattr(item, python_name)
                if inner is not None and inner is not strawberry.UNSET:
                    stack.append((inner, (at, graphql_name)))
        if problem is not None:
            relative = _unlink(at)
            name = ".".join(relative) if relative else path[-1]
            return invalid(f"{name} {problem}", *path, *relative)
    return None


def _refused_arguments(kwargs: dict[str, Any], skip: str | None = None) -> UserError | None:
    for name, value in kwargs.items():
        if value is None or value is strawberry.UNSET or name in (skip, "info"):
            continue
        error = refused_input(value, [to_camel_case(name)])
        if error is not None:
            return error
    return None


def _checked(resolver: R, per_item: str | None) -> R:
    @functools.wraps(resolver)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        error = _refused_arguments(kwargs, skip=per_item)
        if error is not None:
            # Imported here: the schema's types use this module (no import cycle).
            from schema.errors import to_graphql

            return to_graphql(error)
        return await resolver(*args, **kwargs)

    setattr(wrapper, CHECKED, True)
    return wrapper  # type: ignore[return-value]


def checked_input(resolver: R) -> R:
    """A mutation resolver whose arguments are checked first; a refusal is ``InvalidInput``."""
    return _checked(resolver, None)


def checked_except(argument: str) -> Callable[[R], R]:
    """``checked_input``, except ``argument``, which the resolver checks itself with
    ``refused_input``: the items of createUsageEvents fail alone (the others are recorded),
    and createUsageEvent counts its refusal in the usage metrics like any other."""
    return lambda resolver: _checked(resolver, argument)


def checked_arguments(resolver: R) -> R:
    """A query resolver (a root field, or a field of a type that takes arguments) whose
    arguments are checked first; a refusal is a top-level BAD_USER_INPUT error."""

    @functools.wraps(resolver)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        error = _refused_arguments(kwargs)
        if error is not None:
            raise BadUserInput(f"argument {error.message}")
        return await resolver(*args, **kwargs)

    setattr(wrapper, CHECKED, True)
    return wrapper  # type: ignore[return-value]


S = TypeVar("S", bound=Callable[..., AsyncGenerator[Any, None]])


def checked_subscription(resolver: S) -> S:
    """``checked_arguments`` for a subscription resolver (an async generator)."""

    @functools.wraps(resolver)
    async def wrapper(*args: Any, **kwargs: Any) -> AsyncGenerator[Any, None]:
        error = _refused_arguments(kwargs)
        if error is not None:
            raise BadUserInput(f"argument {error.message}")
        async with contextlib.aclosing(resolver(*args, **kwargs)) as items:
            async for item in items:
                yield item

    setattr(wrapper, CHECKED, True)
    return wrapper  # type: ignore[return-value]
