"""Text and values the database would refuse are refused at the boundary, per field and per item.

A NUL character, a lone surrogate, properties nested too deep or holding integers beyond 64
bits, an aware date that cannot be converted to UTC, a credential that is not ASCII: each is
answered as data naming the field (or a 401 for credentials), never a masked internal error,
and nothing of it is written.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strawberry.types.field import StrawberryField

from gateway.settings import Settings
from gateway.storage.db import Database
from resolvers._args import CHECKED, refused_input
from schema import build_schema
from schema.usage import CreateUsageEventInput, UsageEventTarget
from tests.conftest import GraphQLClient
from tests.factories import CREATE_USAGE_EVENT, CREATE_USAGE_EVENTS, customer_on_plan, ok
from tests.factories import setup_pricing as setup_pricing
from tests.test_auth_matrix import World, snapshot
from tests.test_auth_matrix import world as world
from tests.test_http import Clock, gateway_app

# ------------------------------------------------------------------ the check itself


def test_every_root_field_is_checked() -> None:
    schema = build_schema()._schema
    unchecked = []
    for root in (schema.query_type, schema.mutation_type):
        assert root is not None
        for name, field in root.fields.items():
            definition = (field.extensions or {})["strawberry-definition"]
            assert isinstance(definition, StrawberryField)
            assert definition.base_resolver is not None
            if not getattr(definition.base_resolver.wrapped_func, CHECKED, False):
                unchecked.append(name)
    assert unchecked == []


def test_refused_input_names_the_field() -> None:
    item = CreateUsageEventInput(
        target=UsageEventTarget(usage_meter_slug="gen\ud800"), transaction_id="ok"
    )
    error = refused_input(item, ["input", "3"])
    assert error is not None
    assert (error.code.value, error.field, error.message) == (
        "INVALID_INPUT",
        ["input", "3", "target", "usageMeterSlug"],
        "target.usageMeterSlug must not contain a lone surrogate (U+D800 to U+DFFF)",
    )
    keyed = refused_input({"a": [1, {"b\x00": 2}]}, ["input", "properties"])
    assert keyed is not None
    assert (keyed.field, keyed.message) == (
        ["input", "properties", "a", "1"],
        "a.1 has a key that must not contain a NUL character (U+0000)",
    )
    year_one = datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14)))
    dated = refused_input(
        CreateUsageEventInput(target=UsageEventTarget(), usage_date=year_one), ["input"]
    )
    assert dated is not None
    assert dated.field == ["input", "usageDate"]
    assert refused_input({"fine": ["é", "日本", 1.5, None, True]}, ["input"]) is None
    deep: Any = "x\x00"
    for _ in range(3000):  # deeper than Python's recursion limit
        deep = [deep]
    assert refused_input(deep, ["input"]) is not None


# ------------------------------------------------------------------ credentials


@pytest.mark.parametrize(
    "credential",
    ["cst_abc.d\u00e9f".encode(), "sk_\u00e9\u00e9".encode(), b"cst_a\x7f.b"],
)
async def test_a_malformed_credential_is_401_and_rate_limited(
    credential: bytes, settings: Settings, db: Database
) -> None:
    async with gateway_app(settings, gateway_rate_limit_per_minute=2) as (app, client):
        app.state.rate_limiter.clock = Clock()
        statuses = []
        for _ in range(3):
            response = await client.post(
                "/graphql",
                json={"query": "{ __typename }"},
                headers={"authorization": b"Bearer " + credential},
            )
            statuses.append(response.status_code)
            if response.status_code == 401:
                assert response.json() == {
                    "data": None,
                    "errors": [
                        {
                            "message": "malformed credential",
                            "extensions": {"code": "UNAUTHENTICATED"},
                        }
                    ],
                }
        assert statuses == [401, 401, 429]


# ------------------------------------------------------------------ one bad item fails alone

BAD_ITEMS: dict[str, tuple[dict[str, Any], list[str], str]] = {
    "NUL in transactionId": (
        {"transactionId": "tx-\x00-bad"},
        ["transactionId"],
        "transactionId must not contain a NUL character (U+0000)",
    ),
    "properties 256 deep": (
        {"properties": json.loads('{"a":' * 256 + "1" + "}" * 256)},
        ["properties"],
        "properties must nest at most 32 levels deep",
    ),
    "year 1 at +14:00": (
        {"usageDate": "0001-01-01T00:00:00+14:00"},
        ["usageDate"],
        "usageDate is out of the representable range of dates",
    ),
}


def _event(sub: str, n: int, **fields: Any) -> dict[str, Any]:
    return {
        "target": {"usageMeterSlug": "api_calls"},
        "subscriptionId": sub,
        "transactionId": f"tx-{n}",
        "amount": 1,
        **fields,
    }


@pytest.mark.parametrize("bad", list(BAD_ITEMS))
async def test_a_bad_item_fails_alone_in_its_batch(
    bad: str, gql: GraphQLClient, db: Database
) -> None:
    await setup_pricing(gql)
    sub = await customer_on_plan(gql, "user-1")
    fields, field, message = BAD_ITEMS[bad]
    items = [_event(sub, n) for n in range(100)]
    items[57] = _event(sub, 57, **fields)
    results = ok(await gql(CREATE_USAGE_EVENTS, {"input": items}), "createUsageEvents")
    assert [r["__typename"] for r in results] == ["UsageEventRecorded"] * 57 + ["InvalidInput"] + [
        "UsageEventRecorded"
    ] * 42
    assert {k: results[57][k] for k in ("code", "message", "field")} == {
        "code": "INVALID_INPUT",
        "message": message,
        "field": ["input", "57", *field],
    }
    assert await db.fetchval("SELECT count(*) FROM usage_events") == 99
    assert (
        await db.fetchval("SELECT count(*) FROM usage_events WHERE transaction_id = 'tx-57'") == 0
    )
    assert await db.fetchval("SELECT sum(amount) FROM usage_events") == 99

    # The single-event form answers the same, and records nothing.
    single = ok(
        await gql(CREATE_USAGE_EVENT, {"input": _event(sub, 1000, **fields)}), "createUsageEvent"
    )
    assert {k: single[k] for k in ("__typename", "code", "message", "field")} == {
        "__typename": "InvalidInput",
        "code": "INVALID_INPUT",
        "message": message,
        "field": ["input", *field],
    }
    assert await db.fetchval("SELECT count(*) FROM usage_events") == 99


async def test_properties_integers_beyond_64_bits_are_invalid(
    gql: GraphQLClient, db: Database
) -> None:
    await setup_pricing(gql)
    sub = await customer_on_plan(gql, "user-1")
    response = await gql(
        f"""mutation {{ createUsageEvent(input: {{target: {{usageMeterSlug: "api_calls"}},
              subscriptionId: "{sub}", transactionId: "big", amount: 1,
              properties: {{n: {2**70}}}}}) {{ __typename ... on UserError {{ field }} }} }}"""
    )
    assert ok(response, "createUsageEvent") == {
        "__typename": "InvalidInput",
        "field": ["input", "properties"],
    }
    assert await db.fetchval("SELECT count(*) FROM usage_events") == 0


# ------------------------------------------------------------------ every string argument


def _usage_input(w: World, caller: str, slot: str, text: str) -> dict[str, Any]:
    item: dict[str, Any] = {"target": {"usageMeterSlug": "api_calls"}, "amount": 1}
    if caller == "secret_key":
        item |= {"subscriptionId": w.a_sub, "transactionId": "fuzz-tx"}
    if slot == "transactionId":
        item["transactionId"] = text
    elif slot == "subscriptionId":
        item["subscriptionId"] = text
    elif slot in ("usageMeterSlug", "priceSlug", "priceId", "usageMeterId"):
        item["target"] = {slot: text}
    elif slot == "properties key":
        item["properties"] = {text: 1}
    else:  # properties value
        item["properties"] = {"k": [text]}
    return item


# (operation, slot) -> document, variables of (world, caller, text), the expected field path
# of a refusal (None: a query argument, answered BAD_USER_INPUT).
SlotFn = Any
SLOTS: dict[tuple[str, str], tuple[str, SlotFn, list[str] | None]] = {}


def _slot(
    operation: str, name: str, document: str, variables: SlotFn, field: list[str] | None
) -> None:
    SLOTS[(operation, name)] = (document, variables, field)


_slot(
    "billing",
    "customerExternalId",
    "query($t: String) { billing(customerExternalId: $t) { customer { id } } }",
    lambda w, c, t: {"t": t},
    None,
)
_slot(
    "billing",
    "featureSlug",
    'query($t: String!) { billing(customerExternalId: "cust-a") { featureAccess(featureSlug: $t) } }',
    lambda w, c, t: {"t": t},
    None,
)
_slot(
    "billing",
    "usageBalances.subscriptionId",
    'query($t: ID) { billing(customerExternalId: "cust-a") { usageBalances(subscriptionId: $t) { usedBalance } } }',
    lambda w, c, t: {"t": t},
    None,
)
for _arg, _type in (
    ("meterSlug", "String!"),
    ("customerExternalId", "String"),
    ("subscriptionId", "ID"),
):
    _slot(
        "usageBalance",
        _arg,
        f'query($t: {_type}) {{ usageBalance(meterSlug: "api_calls", {_arg}: $t) {{ usedBalance }} }}'
        if _arg != "meterSlug"
        else "query($t: String!) { usageBalance(meterSlug: $t) { usedBalance } }",
        lambda w, c, t: {"t": t},
        None,
    )
_slot(
    "customers",
    "after",
    "query($t: String) { customers(after: $t) { edges { cursor } } }",
    lambda w, c, t: {"t": t},
    None,
)
_FIELDS = "__typename ... on UserError { code field }"
for _name in (
    "transactionId",
    "subscriptionId",
    "usageMeterSlug",
    "priceSlug",
    "priceId",
    "usageMeterId",
    "properties key",
    "properties value",
):
    _path = {
        "properties key": ["properties"],
        "properties value": ["properties", "k", "0"],
        "usageMeterSlug": ["target", "usageMeterSlug"],
        "priceSlug": ["target", "priceSlug"],
        "priceId": ["target", "priceId"],
        "usageMeterId": ["target", "usageMeterId"],
    }.get(_name, [_name])
    _slot(
        "createUsageEvent",
        _name,
        f"mutation($i: CreateUsageEventInput!) {{ createUsageEvent(input: $i) {{ {_FIELDS} }} }}",
        lambda w, c, t, n=_name: {"i": _usage_input(w, c, n, t)},
        ["input", *_path],
    )
    _slot(
        "createUsageEvents",
        _name,
        f"mutation($i: [CreateUsageEventInput!]!) {{ createUsageEvents(input: $i) {{ {_FIELDS} }} }}",
        lambda w, c, t, n=_name: {"i": [_usage_input(w, c, n, t)]},
        ["input", "0", *_path],
    )
_ADMIN = {
    "setupPricingModel": ("SetupPricingModelInput", {"definition": None}),
    "createCustomer": (
        "CreateCustomerInput",
        {"externalId": "fuzz-c", "name": None, "email": None},
    ),
    "createSubscription": (
        "CreateSubscriptionInput",
        {"customerExternalId": "cust-c", "priceSlug": "basic_a_monthly"},
    ),
    "cancelSubscription": ("CancelSubscriptionInput", {"subscriptionId": None}),
    "grantUsageCredits": (
        "GrantUsageCreditsInput",
        {"subscriptionId": "SUB", "usageMeterSlug": "api_calls", "amount": 1},
    ),
    "createCustomerSession": ("CreateCustomerSessionInput", {"customerExternalId": None}),
    "revokeCustomerSessions": ("RevokeCustomerSessionsInput", {"customerExternalId": None}),
}
for _op, (_input, _base) in _ADMIN.items():
    for _name in [k for k, v in _base.items() if isinstance(v, str | None)]:

        def _vars(
            w: World, c: str, t: str, base: dict[str, Any] = _base, n: str = _name
        ) -> dict[str, Any]:
            value = {k: (w.c_sub if v == "SUB" else v) for k, v in base.items() if v is not None}
            return {"i": value | {n: t}}

        _slot(
            _op,
            _name,
            f"mutation($i: {_input}!) {{ {_op}(input: $i) {{ {_FIELDS} }} }}",
            _vars,
            ["input", _name],
        )
# cancelSubscription and createSubscription may only be fuzzed on ids that exist nowhere: a
# valid text names no subscription, and "cust-c" keeps its subscription.

CUSTOMER_ALLOWED = {"billing", "usageBalance", "createUsageEvent", "createUsageEvents"}

TEXT = st.lists(
    st.one_of(
        st.characters(),
        st.sampled_from(["\x00", "\ud800", "\udfff", "\ud83d", "a", "é", "\u2028", "\ufeff"]),
    ),
    max_size=12,
).map("".join)

FUZZ = settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
)


def _as_sent(text: str) -> str:
    """The text the server reads from JSON: surrogate pairs combined, lone ones left."""
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")


def _lone_surrogate(text: str) -> bool:
    return any("\ud800" <= ch <= "\udfff" for ch in _as_sent(text))


def _refused(text: str) -> bool:
    return "\x00" in text or _lone_surrogate(text)


@FUZZ
@given(slot=st.sampled_from(sorted(SLOTS)), text=TEXT, nul=st.booleans())
async def test_any_text_in_any_argument(
    slot: tuple[str, str], text: str, nul: bool, http: httpx.AsyncClient, db: Database, world: World
) -> None:
    if nul:  # half of the examples are certainly refused
        text = text[: len(text) // 2] + "\x00" + text[len(text) // 2 :]
    operation, _name = slot
    document, variables, field = SLOTS[slot]
    for caller in ("secret_key", "customer_a"):
        before = await snapshot(db)
        body = json.dumps({"query": document, "variables": variables(world, caller, text)})
        response = await http.post(
            "/graphql",
            content=body.encode(),
            headers={
                "authorization": f"Bearer {world.tokens[caller]}",
                "content-type": "application/json",
            },
        )
        assert response.status_code < 500, response.text
        answer = response.json()
        codes = [e["extensions"]["code"] for e in answer.get("errors") or []]
        assert "INTERNAL_SERVER_ERROR" not in codes, answer
        if not _refused(text):
            continue
        assert await snapshot(db) == before, (slot, caller, text)
        if _lone_surrogate(text):
            # Lone surrogates cannot even be read from a JSON body: refused as malformed.
            assert response.status_code == 400, answer
            continue
        if caller == "customer_a" and operation not in CUSTOMER_ALLOWED:
            assert (response.status_code, codes) == (403, ["FORBIDDEN"]), answer
        elif field is None:  # a query argument
            assert codes == ["BAD_USER_INPUT"], answer
            assert _name.split(".")[-1] in answer["errors"][0]["message"], answer
        else:
            result = answer["data"][operation]
            if isinstance(result, list):
                (result,) = result
            assert result == {"__typename": "InvalidInput", "code": "INVALID_INPUT", "field": field}
