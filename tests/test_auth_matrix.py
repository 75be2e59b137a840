"""Every query and mutation of the contract, for every kind of caller, with exact answers.

Callers: none, a secret key, a revoked key, customer A's session token, an expired token and a
forged one. Customer A can neither read nor charge customer B by any argument, and a refusal
never reveals whether B's object exists (B's object and a missing one get the same answer).
On every refusal the database is unchanged (a content hash of every table is compared).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gateway.callers.auth import create_api_key, issue_customer_token, revoke_api_key
from gateway.settings import Settings
from gateway.storage.db import Database
from tests.conftest import TABLES, GraphQLClient, GraphQLResponse

PLAN_B = """
name: Plan B
usageMeters:
  - usageMeter: {slug: api_calls, name: API calls}
    prices:
      - {slug: api_calls_b, unitPrice: 2, usageEventsPerUnit: 100, isDefault: true}
features:
  - type: usage_credit_grant
    slug: calls_b
    name: 100 calls
    usageMeterSlug: api_calls
    amount: 100
    renewalFrequency: once
products:
  - product: {slug: basic_b, name: Basic B, default: true}
    price: {type: subscription, slug: basic_b_monthly, unitPrice: 0, intervalUnit: month}
    features: [calls_b]
"""

PLAN_A = """
name: Plan A
isDefault: true
usageMeters:
  - usageMeter: {slug: api_calls, name: API calls}
    prices:
      - {slug: api_calls_a, unitPrice: 3, usageEventsPerUnit: 100, isDefault: true}
      - {slug: api_calls_a_cheap, unitPrice: 1, usageEventsPerUnit: 100}
features:
  - type: usage_credit_grant
    slug: calls_a
    name: 100 calls
    usageMeterSlug: api_calls
    amount: 100
    renewalFrequency: once
products:
  - product: {slug: basic_a, name: Basic A, default: true}
    price: {type: subscription, slug: basic_a_monthly, unitPrice: 0, intervalUnit: month}
    features: [calls_a]
"""

PLAN_C = """
name: Plan C
usageMeters:
  - usageMeter: {slug: seats, name: Seats}
products:
  - product: {slug: basic_c, name: Basic C, default: true}
    price: {type: subscription, slug: basic_c_monthly, unitPrice: 0, intervalUnit: month}
"""

NO_CREDENTIALS = "authentication required: send Authorization: Bearer <secret key or session token>"
UNAUTHENTICATED_MESSAGES = {
    "none": NO_CREDENTIALS,
    "revoked_key": "unknown or revoked secret key",
    "expired_token": "session token expired",
    "forged_token": "invalid session token",
}
CALLERS = ("none", "revoked_key", "expired_token", "forged_token", "customer_a", "secret_key")


@dataclass
class World:
    secret_key: str
    tokens: dict[str, str | None]
    a_id: str
    b_id: str
    a_sub: str
    b_sub: str
    c_sub: str
    a_meter: str
    b_meter: str
    a_price: str
    a_cheap_price: str
    b_price: str
    b_event_id: str


async def snapshot(db: Database) -> dict[str, str]:
    """A content hash of every table: equal snapshots mean nothing was written."""
    hashes: dict[str, str] = {}
    for table in (t.strip() for t in TABLES.split(",")):
        hashes[table] = await db.fetchval(
            f"SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM {table} t"
        )
    return hashes


def ok(response: GraphQLResponse, field: str) -> Any:
    assert response.status == 200, response.body
    assert "errors" not in response.body, response.body
    return response.data[field]


async def setup_model(gql: GraphQLClient, definition: str) -> dict[str, Any]:
    result = ok(
        await gql(
            """mutation($d: String!) { setupPricingModel(input: {definition: $d}) {
                 __typename ... on PricingModelSetUp { pricingModel { id
                   usageMeters { id slug prices { id slug } } } }
                 ... on UserError { message } } }""",
            {"d": definition},
        ),
        "setupPricingModel",
    )
    assert result["__typename"] == "PricingModelSetUp", result
    model: dict[str, Any] = result["pricingModel"]
    return model


async def new_customer(gql: GraphQLClient, external_id: str) -> str:
    result = ok(
        await gql(
            """mutation($e: String!) { createCustomer(input: {externalId: $e}) {
                 __typename ... on CustomerCreated { customer { id } } } }""",
            {"e": external_id},
        ),
        "createCustomer",
    )
    assert result["__typename"] == "CustomerCreated", result
    return str(result["customer"]["id"])


async def subscribe(gql: GraphQLClient, external_id: str, price_slug: str) -> str:
    result = ok(
        await gql(
            """mutation($e: String!, $p: String!) {
                 createSubscription(input: {customerExternalId: $e, priceSlug: $p}) {
                   __typename ... on SubscriptionCreated { subscription { id } } } }""",
            {"e": external_id, "p": price_slug},
        ),
        "createSubscription",
    )
    assert result["__typename"] == "SubscriptionCreated", result
    return str(result["subscription"]["id"])


async def session(gql: GraphQLClient, external_id: str) -> str:
    result = ok(
        await gql(
            """mutation($e: String!) { createCustomerSession(input: {customerExternalId: $e}) {
                 __typename ... on CustomerSessionCreated { token } } }""",
            {"e": external_id},
        ),
        "createCustomerSession",
    )
    assert result["__typename"] == "CustomerSessionCreated", result
    return str(result["token"])


@pytest.fixture
async def world(gql: GraphQLClient, db: Database, secret_key: str, settings: Settings) -> World:
    model_b = await setup_model(gql, PLAN_B)  # the first model is the default for cust-b
    b_id = await new_customer(gql, "cust-b")
    model_a = await setup_model(gql, PLAN_A)  # isDefault: true, so cust-a and cust-c get it
    a_id = await new_customer(gql, "cust-a")
    await new_customer(gql, "cust-c")
    b_sub = await subscribe(gql, "cust-b", "basic_b_monthly")
    a_sub = await subscribe(gql, "cust-a", "basic_a_monthly")
    c_sub = await subscribe(gql, "cust-c", "basic_a_monthly")
    b_event = ok(
        await gql(
            """mutation($s: ID!) { createUsageEvent(input: {target: {usageMeterSlug: "api_calls"},
                 subscriptionId: $s, transactionId: "shared-tx", amount: 7}) {
                 __typename ... on UsageEventRecorded { usageEvent { id } } } }""",
            {"s": b_sub},
        ),
        "createUsageEvent",
    )
    assert b_event["__typename"] == "UsageEventRecorded", b_event

    _, revoked = await create_api_key(db, "revoked")
    revoked_id = await db.fetchval("SELECT id FROM api_keys WHERE name = 'revoked'")
    assert await revoke_api_key(db, revoked_id) is True
    secret = settings.gateway_token_secret
    assert secret is not None
    expired, _ = issue_customer_token(
        secret, uuid.UUID(a_id), timedelta(minutes=5), now=datetime.now(UTC) - timedelta(hours=1)
    )
    forged, _ = issue_customer_token(
        "not-the-server-secret-" + "y" * 32, uuid.UUID(a_id), timedelta(hours=1)
    )
    a_meter = model_a["usageMeters"][0]
    b_meter = model_b["usageMeters"][0]
    a_prices = {p["slug"]: p["id"] for p in a_meter["prices"]}
    return World(
        secret_key=secret_key,
        tokens={
            "none": None,
            "secret_key": secret_key,
            "revoked_key": revoked,
            "customer_a": await session(gql, "cust-a"),
            "expired_token": expired,
            "forged_token": forged,
        },
        a_id=a_id,
        b_id=b_id,
        a_sub=a_sub,
        b_sub=b_sub,
        c_sub=c_sub,
        a_meter=a_meter["id"],
        b_meter=b_meter["id"],
        a_price=a_prices["api_calls_a"],
        a_cheap_price=a_prices["api_calls_a_cheap"],
        b_price={p["slug"]: p["id"] for p in b_meter["prices"]}["api_calls_b"],
        b_event_id=b_event["usageEvent"]["id"],
    )


# ------------------------------------------------------------------ the matrix

RESULT = """__typename
  ... on UsageEventRecorded { replayed usageEvent { customerId subscriptionId priceId amount }
                              balance { availableBalance usedBalance } }
  ... on UserError { code message field }"""


@dataclass
class Case:
    document: str
    variables: dict[str, Any]
    customer_allowed: bool
    as_secret_key: Any  # the exact `data` a secret key gets
    as_customer: Any = None  # the exact `data` customer A gets (when allowed)
    hold: bool = False  # a hold of 4 on A's subscription first, its id as the variable "r"


def cases(w: World) -> dict[str, Case]:
    recorded = {
        "__typename": "UsageEventRecorded",
        "replayed": False,
    }
    held = {
        "__typename": "UsageReserved",
        "replayed": False,
        "reservation": {"amount": 2, "status": "HELD"},
    }
    settled = {
        **recorded,
        "usageEvent": {
            "customerId": w.a_id,
            "subscriptionId": w.a_sub,
            "priceId": w.a_price,
            "amount": 3,
        },
        "balance": {"availableBalance": 97, "usedBalance": 3},
    }
    released = {
        "__typename": "UsageReservationReleased",
        "reservation": {"status": "RELEASED"},
        "balance": {"availableBalance": 100, "reservedBalance": 0},
    }
    return {
        "billing": Case(
            "query($c: String) { billing(customerExternalId: $c) { customer { id externalId } } }",
            {"c": "cust-a"},
            True,
            {"billing": {"customer": {"id": w.a_id, "externalId": "cust-a"}}},
            {"billing": {"customer": {"id": w.a_id, "externalId": "cust-a"}}},
        ),
        "usageBalance": Case(
            """query($c: String) { usageBalance(meterSlug: "api_calls", customerExternalId: $c) {
                 subscriptionId availableBalance usedBalance balanceLimit } }""",
            {"c": "cust-a"},
            True,
            {
                "usageBalance": {
                    "subscriptionId": w.a_sub,
                    "availableBalance": 100,
                    "usedBalance": 0,
                    "balanceLimit": 100,
                }
            },
            {
                "usageBalance": {
                    "subscriptionId": w.a_sub,
                    "availableBalance": 100,
                    "usedBalance": 0,
                    "balanceLimit": 100,
                }
            },
        ),
        "customers": Case(
            "{ customers(first: 10) { edges { node { externalId } } pageInfo { hasNextPage } } }",
            {},
            False,
            {
                "customers": {
                    "edges": [{"node": {"externalId": e}} for e in ("cust-b", "cust-a", "cust-c")],
                    "pageInfo": {"hasNextPage": False},
                }
            },
        ),
        "createUsageEvent": Case(
            f"""mutation($s: ID, $t: String, $n: Int) {{ createUsageEvent(input: {{
                  target: {{usageMeterSlug: "api_calls"}}, subscriptionId: $s,
                  transactionId: $t, amount: $n}}) {{ {RESULT} }} }}""",
            {"s": w.a_sub, "t": "matrix-1", "n": 5},
            True,
            {
                "createUsageEvent": {
                    **recorded,
                    "usageEvent": {
                        "customerId": w.a_id,
                        "subscriptionId": w.a_sub,
                        "priceId": w.a_price,
                        "amount": 5,
                    },
                    "balance": {"availableBalance": 94, "usedBalance": 6},
                }
            },
            {
                "createUsageEvent": {
                    **recorded,
                    "usageEvent": {
                        "customerId": w.a_id,
                        "subscriptionId": w.a_sub,
                        "priceId": w.a_price,
                        "amount": 1,
                    },
                    "balance": {"availableBalance": 99, "usedBalance": 1},
                }
            },
        ),
        "createUsageEvents": Case(
            f"""mutation($s: ID, $t: String, $n: Int) {{ createUsageEvents(input: [{{
                  target: {{usageMeterSlug: "api_calls"}}, subscriptionId: $s,
                  transactionId: $t, amount: $n}}]) {{ {RESULT} }} }}""",
            {"s": w.a_sub, "t": "matrix-2", "n": 3},
            True,
            {
                "createUsageEvents": [
                    {
                        **recorded,
                        "usageEvent": {
                            "customerId": w.a_id,
                            "subscriptionId": w.a_sub,
                            "priceId": w.a_price,
                            "amount": 3,
                        },
                        "balance": {"availableBalance": 96, "usedBalance": 4},
                    }
                ]
            },
            {
                "createUsageEvents": [
                    {
                        **recorded,
                        "usageEvent": {
                            "customerId": w.a_id,
                            "subscriptionId": w.a_sub,
                            "priceId": w.a_price,
                            "amount": 1,
                        },
                        "balance": {"availableBalance": 99, "usedBalance": 1},
                    }
                ]
            },
        ),
        "setupPricingModel": Case(
            """mutation($d: String!) { setupPricingModel(input: {definition: $d}) {
                 __typename ... on PricingModelSetUp { pricingModel { name isDefault } } } }""",
            {"d": PLAN_C},
            False,
            {
                "setupPricingModel": {
                    "__typename": "PricingModelSetUp",
                    "pricingModel": {"name": "Plan C", "isDefault": False},
                }
            },
        ),
        # An unknown model: the matrix is about who may call it (pricing tests apply real ones).
        "updatePricingModel": Case(
            """mutation($d: String!) { updatePricingModel(input: {
                 pricingModelId: "00000000-0000-7000-8000-000000000000", definition: $d}) {
                 __typename } }""",
            {"d": PLAN_C},
            False,
            {"updatePricingModel": {"__typename": "NotFound"}},
        ),
        "createCustomer": Case(
            """mutation { createCustomer(input: {externalId: "cust-new", name: "New"}) {
                 __typename ... on CustomerCreated { customer { externalId name } } } }""",
            {},
            False,
            {
                "createCustomer": {
                    "__typename": "CustomerCreated",
                    "customer": {"externalId": "cust-new", "name": "New"},
                }
            },
        ),
        "createSubscription": Case(
            """mutation { createSubscription(input: {customerExternalId: "cust-c",
                 priceSlug: "basic_a_monthly"}) {
                 __typename ... on SubscriptionCreated { subscription { status current } } } }""",
            {},
            False,
            {
                "createSubscription": {
                    "__typename": "SubscriptionCreated",
                    "subscription": {"status": "ACTIVE", "current": True},
                }
            },
        ),
        "cancelSubscription": Case(
            """mutation($s: ID!) { cancelSubscription(input: {subscriptionId: $s}) {
                 __typename ... on SubscriptionCanceled { subscription { id status } } } }""",
            {"s": w.c_sub},
            False,
            {
                "cancelSubscription": {
                    "__typename": "SubscriptionCanceled",
                    "subscription": {"id": w.c_sub, "status": "CANCELED"},
                }
            },
        ),
        "grantUsageCredits": Case(
            """mutation($s: ID!) { grantUsageCredits(input: {subscriptionId: $s,
                 usageMeterSlug: "api_calls", amount: 50}) {
                 __typename ... on UsageCreditsGranted { balance { availableBalance } } } }""",
            {"s": w.a_sub},
            False,
            {
                "grantUsageCredits": {
                    "__typename": "UsageCreditsGranted",
                    "balance": {"availableBalance": 150},
                }
            },
        ),
        "createCustomerSession": Case(
            """mutation { createCustomerSession(input: {customerExternalId: "cust-a",
                 expiresInSeconds: 60}) { __typename } }""",
            {},
            False,
            {"createCustomerSession": {"__typename": "CustomerSessionCreated"}},
        ),
        "revokeCustomerSessions": Case(
            """mutation { revokeCustomerSessions(input: {customerExternalId: "cust-c"}) {
                 __typename } }""",
            {},
            False,
            {"revokeCustomerSessions": {"__typename": "CustomerSessionsRevoked"}},
        ),
        "createUsageAlert": Case(
            """mutation { createUsageAlert(input: {usageMeterSlug: "api_calls",
                 threshold: {percentUsed: 80}, customerExternalId: "cust-a"}) {
                 __typename ... on UsageAlertCreated { alert { usageMeter { slug }
                 customerExternalId percentUsed usedAbove } } } }""",
            {},
            False,
            {
                "createUsageAlert": {
                    "__typename": "UsageAlertCreated",
                    "alert": {
                        "usageMeter": {"slug": "api_calls"},
                        "customerExternalId": "cust-a",
                        "percentUsed": 80.0,
                        "usedAbove": None,
                    },
                }
            },
        ),
        "deleteUsageAlert": Case(
            """mutation { deleteUsageAlert(input: {alertId: "00000000-0000-0000-0000-000000000000"})
                 { __typename ... on UserError { code } } }""",
            {},
            False,
            {"deleteUsageAlert": {"__typename": "NotFound", "code": "NOT_FOUND"}},
        ),
        "createWebhookEndpoint": Case(
            """mutation { createWebhookEndpoint(input: {url: "http://127.0.0.1:9/hooks"}) {
                 __typename ... on WebhookEndpointCreated { endpoint { url eventTypes } } } }""",
            {},
            False,
            {
                "createWebhookEndpoint": {
                    "__typename": "WebhookEndpointCreated",
                    "endpoint": {
                        "url": "http://127.0.0.1:9/hooks",
                        "eventTypes": ["usage_alert.triggered", "usage_alert.resolved"],
                    },
                }
            },
        ),
        "deleteWebhookEndpoint": Case(
            """mutation { deleteWebhookEndpoint(input: {
                 endpointId: "00000000-0000-0000-0000-000000000000"})
                 { __typename ... on UserError { code } } }""",
            {},
            False,
            {"deleteWebhookEndpoint": {"__typename": "NotFound", "code": "NOT_FOUND"}},
        ),
        "reserveUsage": Case(
            """mutation($s: ID, $t: String) { reserveUsage(input: {
                  target: {usageMeterSlug: "api_calls"}, subscriptionId: $s,
                  transactionId: $t, amount: 2}) { __typename
                  ... on UsageReserved { replayed reservation { amount status }
                                         balance { availableBalance reservedBalance } }
                  ... on UserError { code message field } } }""",
            {"s": w.a_sub, "t": "matrix-hold"},
            True,
            {"reserveUsage": {**held, "balance": {"availableBalance": 96, "reservedBalance": 4}}},
            {"reserveUsage": {**held, "balance": {"availableBalance": 98, "reservedBalance": 2}}},
        ),
        "finalizeUsageReservation": Case(
            f"""mutation($r: ID!) {{ finalizeUsageReservation(input: {{reservationId: $r,
                  amount: 3}}) {{ {RESULT} }} }}""",
            {},
            True,
            {"finalizeUsageReservation": {**settled, "replayed": True}},
            {"finalizeUsageReservation": settled},
            hold=True,
        ),
        "releaseUsageReservation": Case(
            """mutation($r: ID!) { releaseUsageReservation(input: {reservationId: $r}) {
                 __typename ... on UsageReservationReleased { reservation { status }
                   balance { availableBalance reservedBalance } } } }""",
            {},
            True,
            {"releaseUsageReservation": released},
            {"releaseUsageReservation": released},
            hold=True,
        ),
        "voidUsageEvent": Case(
            """mutation($e: ID!) { voidUsageEvent(input: {usageEventId: $e, reason: "typo"}) {
                 __typename ... on UsageEventVoided { usageEvent { id voidReason }
                   balance { usedBalance } } } }""",
            {"e": w.b_event_id},
            False,
            {
                "voidUsageEvent": {
                    "__typename": "UsageEventVoided",
                    "usageEvent": {"id": w.b_event_id, "voidReason": "typo"},
                    "balance": {"usedBalance": 0},
                }
            },
        ),
    }


def test_the_matrix_covers_every_root_field_of_the_contract() -> None:
    from graphql import build_schema

    from tests.conftest import FIXTURES
    from tests.test_schema import PENDING

    contract = build_schema((FIXTURES / "contract.graphql").read_text())
    fields = set(contract.query_type.fields) | set(contract.mutation_type.fields)  # type: ignore[union-attr]
    pending = {item for items in PENDING.values() for item in items}
    fields -= {f for f in set(fields) if f"Mutation.{f}" in pending or f"Query.{f}" in pending}
    dummy = World("", {}, *[""] * 11)
    assert set(cases(dummy)) == fields


@pytest.mark.parametrize(
    "operation",
    [
        "billing",
        "usageBalance",
        "customers",
        "createUsageEvent",
        "createUsageEvents",
        "setupPricingModel",
        "createCustomer",
        "createSubscription",
        "cancelSubscription",
        "grantUsageCredits",
        "createCustomerSession",
        "revokeCustomerSessions",
        "createUsageAlert",
        "deleteUsageAlert",
        "createWebhookEndpoint",
        "deleteWebhookEndpoint",
        "reserveUsage",
        "finalizeUsageReservation",
        "releaseUsageReservation",
        "voidUsageEvent",
    ],
)
async def test_each_caller_gets_exactly_its_answer(
    operation: str, gql: GraphQLClient, db: Database, world: World
) -> None:
    case = cases(world)[operation]
    extra: dict[str, Any] = {}
    if case.hold:
        held = ok(
            await gql(
                """mutation($s: ID!) { reserveUsage(input: {target: {usageMeterSlug: "api_calls"},
                     subscriptionId: $s, transactionId: "matrix-held", amount: 4}) {
                     __typename ... on UsageReserved { reservation { id } } } }""",
                {"s": world.a_sub},
            ),
            "reserveUsage",
        )
        extra["r"] = held["reservation"]["id"]
    for caller in CALLERS:
        before = await snapshot(db)
        variables = {**case.variables, **extra}
        if caller == "customer_a":  # a session names neither its customer nor its subscription
            variables = {k: v for k, v in variables.items() if k not in ("c", "s", "t", "n")}
        response = await gql(case.document, variables, token=world.tokens[caller])
        if caller in UNAUTHENTICATED_MESSAGES:
            assert (response.status, response.body) == (
                401,
                {
                    "data": None,
                    "errors": [
                        {
                            "message": UNAUTHENTICATED_MESSAGES[caller],
                            "extensions": {"code": "UNAUTHENTICATED"},
                        }
                    ],
                },
            ), caller
            assert await snapshot(db) == before, caller
        elif caller == "customer_a" and not case.customer_allowed:
            assert (response.status, response.body) == (
                403,
                {
                    "data": None,
                    "errors": [
                        {
                            "message": f"{operation} needs a secret API key",
                            "extensions": {"code": "FORBIDDEN"},
                        }
                    ],
                },
            )
            assert await snapshot(db) == before
        elif caller == "customer_a":
            assert (response.status, response.body) == (200, {"data": case.as_customer})
        else:
            assert (response.status, response.body) == (200, {"data": case.as_secret_key})


# ------------------------------------------------------------------ isolation of customers


def _same_answer(mine: GraphQLResponse, my_id: str, theirs: GraphQLResponse, their_id: str) -> None:
    """Two answers that differ at most by the id the caller itself sent."""
    assert mine.status == theirs.status
    assert json.dumps(mine.body).replace(my_id, "ID") == json.dumps(theirs.body).replace(
        their_id, "ID"
    )


async def test_a_customer_reads_no_other_customer(
    gql: GraphQLClient, db: Database, world: World
) -> None:
    token = world.tokens["customer_a"]
    missing = str(uuid.uuid4())
    before = await snapshot(db)

    async def billing(external_id: str) -> GraphQLResponse:
        return await gql(
            "query($c: String) { billing(customerExternalId: $c) { customer { id } } }",
            {"c": external_id},
            token=token,
        )

    other, nobody = await billing("cust-b"), await billing("nobody")
    assert (other.status, other.body) == (200, {"data": {"billing": None}})
    assert (nobody.status, nobody.body) == (200, {"data": {"billing": None}})

    async def balance(customer: str | None, sub: str | None) -> GraphQLResponse:
        return await gql(
            """query($c: String, $s: ID) {
                 usageBalance(meterSlug: "api_calls", customerExternalId: $c, subscriptionId: $s)
                 { availableBalance } }""",
            {"c": customer, "s": sub},
            token=token,
        )

    for response in (
        await balance("cust-b", None),
        await balance("nobody", None),
        await balance(None, world.b_sub),
        await balance(None, missing),
        await balance(None, "not-an-id"),
        await balance("cust-b", world.b_sub),
        await balance("cust-a", world.b_sub),
    ):
        assert (response.status, response.body) == (200, {"data": {"usageBalance": None}})

    async def balances_of(sub: str) -> GraphQLResponse:
        return await gql(
            "query($s: ID) { billing { usageBalances(subscriptionId: $s) { availableBalance } } }",
            {"s": sub},
            token=token,
        )

    theirs, nothing = await balances_of(world.b_sub), await balances_of(missing)
    assert (theirs.status, theirs.body) == (200, {"data": {"billing": {"usageBalances": []}}})
    assert (nothing.status, nothing.body) == (200, {"data": {"billing": {"usageBalances": []}}})
    assert await snapshot(db) == before


CHARGE = f"""mutation($input: CreateUsageEventInput!) {{ createUsageEvent(input: $input) {{
  {RESULT} }} }}"""
CHARGE_BATCH = f"""mutation($input: [CreateUsageEventInput!]!) {{ createUsageEvents(input: $input) {{
  {RESULT} }} }}"""


@pytest.mark.parametrize(
    ("argument", "field", "message"),
    [
        ("subscriptionId", ["input", "subscriptionId"], "no subscription {}"),
        ("priceId", ["input", "target", "priceId"], "no price {} in the customer's pricing model"),
        (
            "usageMeterId",
            ["input", "target", "usageMeterId"],
            "no usage meter {} in the customer's pricing model",
        ),
        (
            "priceSlug",
            ["input", "target", "priceSlug"],
            "no price {} in the customer's pricing model",
        ),
    ],
)
async def test_a_customer_charges_no_other_customer(
    argument: str, field: list[str], message: str, gql: GraphQLClient, db: Database, world: World
) -> None:
    token = world.tokens["customer_a"]
    theirs = {
        "subscriptionId": world.b_sub,
        "priceId": world.b_price,
        "usageMeterId": world.b_meter,
        "priceSlug": "api_calls_b",
    }[argument]
    missing = "no_such_price" if argument == "priceSlug" else str(uuid.uuid4())

    def payload(value: str) -> dict[str, Any]:
        if argument == "subscriptionId":
            return {"target": {"usageMeterSlug": "api_calls"}, "subscriptionId": value}
        return {"target": {argument: value}}

    before = await snapshot(db)
    answers = []
    for value in (theirs, missing):
        single = await gql(CHARGE, {"input": payload(value)}, token=token)
        assert (single.status, single.body) == (
            200,
            {
                "data": {
                    "createUsageEvent": {
                        "__typename": "NotFound",
                        "code": "NOT_FOUND",
                        "message": message.format(value),
                        "field": field,
                    }
                }
            },
        )
        batch = await gql(CHARGE_BATCH, {"input": [payload(value)]}, token=token)
        assert (batch.status, batch.body) == (
            200,
            {
                "data": {
                    "createUsageEvents": [
                        {
                            "__typename": "NotFound",
                            "code": "NOT_FOUND",
                            "message": message.format(value),
                            "field": [field[0], "0", *field[1:]],
                        }
                    ]
                }
            },
        )
        answers.append((single, value))
    _same_answer(answers[0][0], answers[0][1], answers[1][0], answers[1][1])
    assert await snapshot(db) == before


async def test_a_customer_never_sees_another_customers_events(
    gql: GraphQLClient, db: Database, world: World
) -> None:
    """B recorded "shared-tx": the same transactionId is A's own, new event, not B's."""
    response = await gql(
        CHARGE,
        {"input": {"target": {"usageMeterSlug": "api_calls"}, "transactionId": "shared-tx"}},
        token=world.tokens["customer_a"],
    )
    result = ok(response, "createUsageEvent")
    assert result == {
        "__typename": "UsageEventRecorded",
        "replayed": False,
        "usageEvent": {
            "customerId": world.a_id,
            "subscriptionId": world.a_sub,
            "priceId": world.a_price,
            "amount": 1,
        },
        "balance": {"availableBalance": 99, "usedBalance": 1},
    }
    rows = await db.fetch(
        "SELECT customer_id::text, amount FROM usage_events WHERE transaction_id = 'shared-tx'"
        " ORDER BY customer_id = $1::uuid",
        uuid.UUID(world.b_id),
    )
    assert [(r["customer_id"], r["amount"]) for r in rows] == [(world.a_id, 1), (world.b_id, 7)]
    b_events = await db.fetchval(
        "SELECT count(*) FROM usage_events WHERE id = $1", uuid.UUID(world.b_event_id)
    )
    assert b_events == 1


async def test_a_customer_may_not_pick_a_cheaper_price(
    gql: GraphQLClient, db: Database, world: World
) -> None:
    before = await snapshot(db)
    for target in ({"priceId": world.a_cheap_price}, {"priceSlug": "api_calls_a_cheap"}):
        response = await gql(
            CHARGE, {"input": {"target": target}}, token=world.tokens["customer_a"]
        )
        kind = next(iter(target))
        assert (response.status, response.body) == (
            200,
            {
                "data": {
                    "createUsageEvent": {
                        "__typename": "Forbidden",
                        "code": "FORBIDDEN",
                        "message": "a customer session may only target a meter or its default price",
                        "field": ["input", "target", kind],
                    }
                }
            },
        )
    assert await snapshot(db) == before


async def test_a_forbidden_field_refuses_the_whole_operation(
    gql: GraphQLClient, db: Database, world: World
) -> None:
    """An allowed mutation next to a forbidden one does not run: nothing is written."""
    before = await snapshot(db)
    response = await gql(
        """mutation { createUsageEvent(input: {target: {usageMeterSlug: "api_calls"}}) {
             __typename }
           ...Admin }
           fragment Admin on Mutation { createCustomer(input: {externalId: "x"}) { __typename } }""",
        token=world.tokens["customer_a"],
    )
    assert (response.status, response.body) == (
        403,
        {
            "data": None,
            "errors": [
                {
                    "message": "createCustomer needs a secret API key",
                    "extensions": {"code": "FORBIDDEN"},
                }
            ],
        },
    )
    assert await snapshot(db) == before


async def test_a_token_of_a_removed_customer_is_refused(
    gql: GraphQLClient, db: Database, world: World, settings: Settings
) -> None:
    customer_id = await new_customer(gql, "cust-gone")
    token = await session(gql, "cust-gone")
    response = await gql("{ billing { customer { externalId } } }", token=token)
    assert (response.status, response.body) == (
        200,
        {"data": {"billing": {"customer": {"externalId": "cust-gone"}}}},
    )
    await db.execute("DELETE FROM customers WHERE id = $1", uuid.UUID(customer_id))
    response = await gql("{ billing { customer { externalId } } }", token=token)
    assert (response.status, response.body) == (
        401,
        {
            "data": None,
            "errors": [
                {
                    "message": "the session's customer no longer exists",
                    "extensions": {"code": "UNAUTHENTICATED"},
                }
            ],
        },
    )


async def test_a_customer_settles_no_other_customers_hold(
    gql: GraphQLClient, db: Database, world: World
) -> None:
    held = ok(
        await gql(
            """mutation($s: ID!) { reserveUsage(input: {target: {usageMeterSlug: "api_calls"},
                 subscriptionId: $s, transactionId: "b-hold", amount: 4}) {
                 __typename ... on UsageReserved { reservation { id } } } }""",
            {"s": world.b_sub},
        ),
        "reserveUsage",
    )
    theirs = held["reservation"]["id"]
    missing = str(uuid.uuid4())
    token = world.tokens["customer_a"]
    before = await snapshot(db)
    for document in (
        """mutation($r: ID!) { finalizeUsageReservation(input: {reservationId: $r, amount: 1}) {
             __typename ... on UserError { code message field } } }""",
        """mutation($r: ID!) { releaseUsageReservation(input: {reservationId: $r}) {
             __typename ... on UserError { code message field } } }""",
    ):
        other = await gql(document, {"r": theirs}, token=token)
        nobody = await gql(document, {"r": missing}, token=token)
        _same_answer(other, theirs, nobody, missing)
        assert "NotFound" in json.dumps(other.body)
    reserve = """mutation($s: ID) { reserveUsage(input: {target: {usageMeterSlug: "api_calls"},
                   subscriptionId: $s, amount: 1}) { __typename
                   ... on UserError { code message field } } }"""
    other = await gql(reserve, {"s": world.b_sub}, token=token)
    nobody = await gql(reserve, {"s": missing}, token=token)
    _same_answer(other, world.b_sub, nobody, missing)
    assert other.data == {
        "reserveUsage": {
            "__typename": "NotFound",
            "code": "NOT_FOUND",
            "message": f"no subscription {world.b_sub}",
            "field": ["input", "subscriptionId"],
        }
    }
    assert await snapshot(db) == before
