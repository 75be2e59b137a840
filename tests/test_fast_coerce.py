"""The compiled coercers coerce as graphql-core's ``coerce_input_value`` (gateway.api.fast_coerce),
on generated values near the schema's input types: valid ones, and ones wrong in one place."""

from __future__ import annotations

from typing import Any

import pytest
import strawberry
from graphql import (
    GraphQLInputObjectType,
    GraphQLInputType,
    GraphQLList,
    GraphQLNonNull,
    Undefined,
    coerce_input_value,
    get_nullable_type,
)
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from gateway.api.fast_coerce import coercer
from gateway.api.fast_plan import DEFINITION, input_converter
from gateway.api.graphql_fast import FastExecutor
from schema import build_schema
from schema.usage import CreateUsageEventInput, UsageEventTarget

SCHEMA = build_schema()._schema
MUTATION = SCHEMA.mutation_type
assert MUTATION is not None
HOT = {
    name: MUTATION.fields[name].args["input"].type
    for name in ("createUsageEvent", "createUsageEvents")
}

ODD = st.sampled_from(
    [
        None,
        0,
        -1,
        2**31,
        2**63,
        1.5,
        True,
        "",
        "x",
        "not-a-uuid",
        "00000000-0000-0000-0000-000000000007",
        "2026-12-01T00:00:00Z",
        "yesterday",
        [],
        [1],
        {},
        {"k": [1, {"n": None}]},
    ]
)


def near(type_: GraphQLInputType, depth: int = 0) -> st.SearchStrategy[Any]:
    """Values of ``type_``, or wrong in some place (an odd value instead of any part)."""
    nullable = get_nullable_type(type_)
    if isinstance(nullable, GraphQLList):
        item = near(nullable.of_type, depth + 1)
        valid: st.SearchStrategy[Any] = st.one_of(st.lists(item, max_size=4), item)
    elif isinstance(nullable, GraphQLInputObjectType):
        fields = {name: near(field.type, depth + 1) for name, field in nullable.fields.items()}
        valid = st.fixed_dictionaries(
            {}, optional={**fields, "unknown": ODD} if depth == 0 else fields
        )
    else:
        valid = ODD
    if not isinstance(type_, GraphQLNonNull):
        valid = st.one_of(st.none(), valid)
    return st.one_of(valid, valid, valid, ODD)


def outcome(coerce: Any, value: Any) -> tuple[str, Any, Any]:
    """What coercing gives: the value and its type, or the exception raised (strawberry's
    oneOf check raises out of graphql-core's coercion)."""
    try:
        result = coerce(value)
    except Exception as exc:
        return ("raised", type(exc), str(exc))
    return ("value", type(result), result)


@hypothesis_settings(max_examples=400, deadline=None)
@given(data=st.data())
def test_the_hot_inputs_coerce_as_graphql_core_coerces_them(data: st.DataObject) -> None:
    for type_ in HOT.values():
        compiled = coercer(type_)
        assert compiled is not None
        value = data.draw(near(type_))
        expected = outcome(lambda v, t=type_: coerce_input_value(v, t), value)
        assert outcome(compiled, value) == expected, value


def test_valid_inputs_are_coerced_and_invalid_ones_are_undefined() -> None:
    many = coercer(HOT["createUsageEvents"])
    assert many is not None
    item = {
        "target": {"usageMeterSlug": "generations"},
        "subscriptionId": "00000000-0000-0000-0000-000000000007",
        "amount": 3,
        "transactionId": "t",
    }
    # requireBalance's default filled in; a single item is a list of one
    assert many([item]) == [{**item, "requireBalance": False}]
    assert many(item) == [{**item, "requireBalance": False}]
    # strawberry's oneOf check raises, from either
    for target in ({"usageMeterSlug": "a", "priceSlug": "b"}, {"usageMeterSlug": None}):
        wrong = [{**item, "target": target}]
        expected = outcome(lambda v: coerce_input_value(v, HOT["createUsageEvents"]), wrong)
        assert outcome(many, wrong) == expected
        assert expected[0] == "raised"
    for wrong in (
        [{**item, "amount": "3"}],
        [{**item, "extra": 1}],
        [{k: v for k, v in item.items() if k != "target"}],
        [item, None],
        None,
    ):
        assert many(wrong) is Undefined, wrong
        assert coerce_input_value(wrong, HOT["createUsageEvents"]) is Undefined


def test_every_input_type_of_the_schema_compiles_or_is_left_to_graphql_core() -> None:
    compiled = {
        name: coercer(type_) is not None
        for name, type_ in SCHEMA.type_map.items()
        if isinstance(type_, GraphQLInputObjectType) and not name.startswith("__")
    }
    assert compiled["CreateUsageEventInput"] is True
    assert compiled["UsageEventTarget"] is True
    assert all(isinstance(v, bool) for v in compiled.values())


def _made_directly() -> dict[str, tuple[Any, Any]]:
    """For each hot field: (the coercer making strawberry's input objects as it goes, the
    coercer to dicts then strawberry's conversion as the compiled path's converter does it)."""
    schema = build_schema()
    names = schema.config.name_converter
    leaves = schema.schema_converter.scalar_registry
    executor = FastExecutor(SCHEMA, HOT, lambda *a, **k: None, names=names, leaves=leaves)
    out = {}
    for name, type_ in HOT.items():
        argument = MUTATION.fields[name].extensions[DEFINITION].base_resolver.arguments[0]
        convert = input_converter(argument.type, names, leaves)
        plain = coercer(type_)
        assert plain is not None

        def converted(value: Any, plain: Any = plain, convert: Any = convert) -> Any:
            coerced = plain(value)
            return coerced if coerced is Undefined else convert(coerced)

        out[name] = (coercer(type_, build=executor._input_object), converted)
    return out


MADE_DIRECTLY = _made_directly()


@hypothesis_settings(max_examples=400, deadline=None)
@given(data=st.data())
def test_input_objects_made_while_coercing_equal_the_conversion_of_the_dicts(
    data: st.DataObject,
) -> None:
    for name, type_ in HOT.items():
        direct, converted = MADE_DIRECTLY[name]
        assert direct is not None
        value = data.draw(near(type_))
        assert outcome(direct, value) == outcome(converted, value), value


def test_a_batch_is_coerced_to_strawberry_input_objects() -> None:
    direct, _ = MADE_DIRECTLY["createUsageEvents"]
    item = {
        "target": {"usageMeterSlug": "generations"},
        "subscriptionId": "00000000-0000-0000-0000-000000000007",
        "amount": 3,
    }
    [made] = direct([item])
    assert made == CreateUsageEventInput(
        target=UsageEventTarget(usage_meter_slug="generations"),
        subscription_id=strawberry.ID("00000000-0000-0000-0000-000000000007"),
        amount=3,
        require_balance=False,
    )
    assert made.transaction_id is strawberry.UNSET
    assert made.target.price_slug is strawberry.UNSET
    # strawberry's oneOf check still raises; a wrong value is still Undefined
    with pytest.raises(Exception, match="exactly one key"):
        direct([{**item, "target": {"usageMeterSlug": "a", "priceSlug": "b"}}])
    assert direct([{**item, "amount": "3"}]) is Undefined
