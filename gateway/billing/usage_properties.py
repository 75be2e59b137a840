"""Event properties as stored: checked for shape and size, integral numbers canonical
(moved out of ``usage``, which re-exports them)."""

from __future__ import annotations

from typing import Any

import orjson

from gateway.errors import invalid
from gateway.settings import Settings


def canonical_json(value: Any) -> Any:
    """JSON with every integral number written as an integer (1.0 -> 1).

    PostgreSQL's jsonb treats 1 and 1.0 as equal but keeps their text apart; distinct
    property sets are keyed by text, so equal sets must have one text.
    """
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: canonical_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [canonical_json(v) for v in value]
    return value


def json_depth(value: Any, limit: int) -> int:
    """How deep a JSON value nests (a scalar is 0, {} is 1), counted up to ``limit + 1``.

    Iterative, and it stops past the limit: the value may be nested as deep as the request
    parser allowed, deeper than Python's recursion limit and orjson's encoder accept.
    """
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            depth += 1
            deepest = max(deepest, depth)
            if deepest > limit:
                return deepest
            stack.extend(
                (inner, depth) for inner in (item.values() if isinstance(item, dict) else item)
            )
    return deepest


def check_properties(properties: Any, settings: Settings) -> Any:
    """Event properties as stored (integral numbers canonical), or a UserError."""
    if properties is not None:
        if not isinstance(properties, dict):
            return invalid("properties must be a JSON object", "input", "properties")
        depth = settings.gateway_max_properties_depth
        if json_depth(properties, depth) > depth:
            return invalid(
                f"properties must nest at most {depth} levels deep", "input", "properties"
            )
        properties = canonical_json(properties)
        try:
            size = len(orjson.dumps(properties))
        except orjson.JSONEncodeError:  # e.g. an integer beyond 64 bits
            return invalid(
                "properties must be JSON that PostgreSQL can store (integers of at most 64 bits)",
                "input",
                "properties",
            )
        if size > settings.gateway_max_properties_bytes:
            return invalid(
                f"properties must be at most {settings.gateway_max_properties_bytes} bytes"
                f" of JSON (got {size})",
                "input",
                "properties",
            )
    return properties
