"""Scalars of the contract beyond GraphQL's built-in ones."""

from __future__ import annotations

from typing import Any, NewType

import strawberry

LONG_MIN = -(2**63)
LONG_MAX = 2**63 - 1


def _long(value: Any) -> int:
    # bool is an int in Python, never a Long; floats are accepted only when integral.
    if isinstance(value, bool):
        raise ValueError(f"Long cannot represent a non-integer value: {value!r}")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int):
        raise ValueError(f"Long cannot represent a non-integer value: {value!r}")
    if not LONG_MIN <= value <= LONG_MAX:
        raise ValueError(f"Long cannot represent a non 64-bit signed integer value: {value}")
    return value


Long = NewType("Long", int)

# Registered through StrawberryConfig.scalar_map (schema.build_schema).
LONG_SCALAR = strawberry.scalar(
    name="Long",
    description="A 64-bit signed integer, written as a JSON number"
    " (exact in JavaScript up to 2^53 - 1).",
    serialize=_long,
    parse_value=_long,
)
