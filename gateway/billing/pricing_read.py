"""Reading a definition: YAML or JSON text to ``PricingModelSpec``, or every problem.

``parse`` returns the definition or every problem as ``path: problem``
(``features[2].usageMeterSlug: unknown usage meter "x"``), in the gateway's words (pydantic's
error types mapped by ``_message``). Each entry of ``usageMeters``, ``features``,
``products`` and ``resources`` is validated on its own, so that the rules spanning entries
(``pricing_rules.cross_check``) still run over the well-formed ones and every problem is
listed at once. Nothing is written here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Hashable
from typing import Any

import yaml
from pydantic import TypeAdapter, ValidationError

from gateway.billing.pricing_format import (
    _UNION_TAGS,
    MAX_NAME_LENGTH,
    Feature,
    PricingModelSpec,
    ProductEntry,
    ResourceSpec,
    UsageMeterEntry,
)
from gateway.billing.pricing_rules import _quote, cross_check

# --- Reading the text -----------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """A SafeLoader that rejects duplicate keys in a mapping (YAML keeps the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[tuple[str, str]] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                ident = (key_node.tag, key_node.value)
                if ident in seen:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping",
                        node.start_mark,
                        f"found duplicate key {json.dumps(key_node.value)}",
                        key_node.start_mark,
                    )
                seen.add(ident)
        return super().construct_mapping(node, deep=deep)


class _DuplicateJsonKey(ValueError):
    pass


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateJsonKey(key)
        result[key] = value
    return result


def load(text: str) -> tuple[Any, str | None]:
    """The document, or a problem. JSON is read as JSON first so that tab-indented JSON
    (which YAML rejects) works; anything else goes through YAML, which names the line and
    column of a mistake."""
    if text.lstrip().startswith(("{", "[")):
        try:
            return json.loads(text, object_pairs_hook=_json_object), None
        except (ValueError, RecursionError):
            pass  # YAML reports it (with its position)
    try:
        return yaml.load(text, Loader=_StrictLoader), None  # a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "cannot be parsed"
        if mark is None:
            return None, f"definition: malformed YAML: {problem}"
        return None, (
            f"definition: malformed YAML at line {mark.line + 1}, column {mark.column + 1}: "
            f"{problem}"
        )
    except yaml.YAMLError as exc:
        return None, f"definition: malformed YAML: {exc}"
    except RecursionError:
        return None, "definition: malformed YAML: nested too deeply"
    except ValueError as exc:  # a value YAML recognised but could not build (a date, an int)
        reason = str(exc)
        if "integer string conversion" in reason:
            reason = "a number has too many digits"
        return None, f"definition: malformed YAML: {reason}"


def _path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part in _UNION_TAGS:
            continue
        else:
            path += f".{part}" if path else part
    return path or "definition"


def _describe(value: Any) -> str:
    """How a wrong value is named in a problem."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, float):
        return f"number {value}"
    if isinstance(value, str):
        return _quote(value if len(value) <= 60 else value[:60] + "...")
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"{type(value).__name__} {_quote(str(value))}"


_EXPECTED = {
    "int_type": "an integer",
    "int_from_float": "an integer",
    "int_parsing": "an integer",
    "bool_type": "a boolean",
    "bool_parsing": "a boolean",
    "string_type": "a string",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "none_required": "null or absent",
}


def _choices(ctx: dict[str, Any], key: str) -> str:
    """pydantic's list of allowed values ("'a', 'b' or 'c'") as '"a", "b", "c"'."""
    return ", ".join(f'"{c}"' for c in re.findall(r"'([^']*)'", str(ctx.get(key, ""))))


def _message(error: Any) -> tuple[str, str]:
    """(path, message) of one pydantic error, in the gateway's words."""
    loc = tuple(error["loc"])
    kind = error["type"]
    value = error.get("input")
    ctx = error.get("ctx", {})
    path = _path(loc)
    if kind == "missing":
        return path, "is required"
    if kind == "extra_forbidden":
        return path, "unknown field"
    if kind in _EXPECTED:
        return path, f"must be {_EXPECTED[kind]}, got {_describe(value)}"
    if kind == "union_tag_not_found":
        return _path((*loc, "type")), "is required"
    if kind == "union_tag_invalid":
        tag = value.get("type") if isinstance(value, dict) else None
        if tag == "usage" and "price" in loc:
            return _path((*loc, "type")), "usage prices belong to a usage meter, not a product"
        return _path((*loc, "type")), f"must be one of {_choices(ctx, 'expected_tags')}, got " + (
            _describe(tag)
        )
    if kind == "literal_error" and loc[-1] == "type" and "prices" in loc:
        return path, (
            f'must be "usage": the prices of a usage meter are usage prices, got {_describe(value)}'
        )
    if kind == "literal_error":
        return path, f"must be one of {_choices(ctx, 'expected')}, got {_describe(value)}"
    if kind == "greater_than_equal":
        bound = ctx.get("ge")
        return path, "must be > 0" if bound == 1 else f"must be >= {bound}"
    if kind == "less_than_equal":
        return path, f"must be <= {ctx.get('le')}"
    if kind == "string_pattern_mismatch" and loc and loc[-1] == "currency":
        if isinstance(value, str) and re.fullmatch(r"[A-Z]{3}", value.upper()):
            return path, f'must be upper-case: "{value.upper()}", not {_quote(value)}'
        return path, (f'must be a three-letter ISO 4217 code such as "USD", got {_describe(value)}')
    if kind == "string_pattern_mismatch":
        return path, (
            "must start with a lower-case letter or digit and contain only lower-case letters,"
            f' digits, "_" and "-", got {_describe(value)}'
        )
    if kind == "string_too_long":
        return path, f"must be at most {MAX_NAME_LENGTH} characters"
    if kind == "string_too_short":
        return path, "must not be empty"
    message = str(error["msg"]).removeprefix("Value error, ")
    return path, message[:1].lower() + message[1:]


def parse(text: str) -> tuple[PricingModelSpec | None, list[str]]:
    """The definition, or None and every problem (``path: problem``)."""
    data, load_problem = load(text)
    if load_problem is not None:
        return None, [load_problem]
    if data is None:
        return None, ["definition: is empty"]
    if not isinstance(data, dict):
        return None, [
            "definition: the top level must be a mapping (name, usageMeters, features, products),"
            f" got {_describe(data)}"
        ]
    # Each entry of the four lists is validated on its own, so that the rules spanning
    # entries (cross_check) still run over the valid ones: every problem is listed at once.
    problems: list[str] = []
    top = dict(data)
    entries: dict[str, list[Any]] = {}
    for key in _ENTRY_ADAPTERS:
        if isinstance(top.get(key), list):
            entries[key] = top[key]
            top[key] = []
    spec: PricingModelSpec | None = None
    try:
        spec = PricingModelSpec.model_validate(top)
    except ValidationError as exc:
        problems.extend(": ".join(_message(e)) for e in exc.errors())
    valid: dict[str, list[Any]] = {}
    for key, items in entries.items():
        valid[key] = []
        for i, item in enumerate(items):
            try:
                valid[key].append(_ENTRY_ADAPTERS[key].validate_python(item))
            except ValidationError as exc:
                for e in exc.errors():
                    e["loc"] = (key, i, *e["loc"])
                    problems.append(": ".join(_message(e)))
    if spec is None:
        snake = _snake(valid)
        spec = PricingModelSpec.model_construct(
            name="",
            is_default=False,
            usage_meters=snake.get("usage_meters", []),
            features=snake.get("features", []),
            products=snake.get("products", []),
            resources=snake.get("resources"),
        )
    else:
        spec = spec.model_copy(update=_snake(valid))
    problems.extend(cross_check(spec, _raw_slugs(entries)))
    return (None, problems) if problems else (spec, [])


_ENTRY_ADAPTERS: dict[str, TypeAdapter[Any]] = {
    "usageMeters": TypeAdapter(UsageMeterEntry),
    "features": TypeAdapter(Feature),
    "products": TypeAdapter(ProductEntry),
    "resources": TypeAdapter(ResourceSpec),
}


def _snake(valid: dict[str, list[Any]]) -> dict[str, list[Any]]:
    names = {"usageMeters": "usage_meters", "features": "features", "products": "products"}
    return {names.get(k, k): v for k, v in valid.items()}


def _raw_slugs(entries: dict[str, list[Any]]) -> set[str]:
    """Every slug an entry gives, valid or not: references to them are not reported again."""
    slugs: set[str] = set()
    for key, items in entries.items():
        for item in items:
            if not isinstance(item, dict):
                continue
            inner = item.get("usageMeter") if key == "usageMeters" else item
            if isinstance(inner, dict) and isinstance(inner.get("slug"), str):
                slugs.add(inner["slug"].strip())
    return slugs
