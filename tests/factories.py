"""Building test data through the gateway's own mutations."""

from __future__ import annotations

from typing import Any

from tests.conftest import FIXTURES, GraphQLClient

PRICING = (FIXTURES / "pricing.yaml").read_text()

EVENT_FIELDS = """
  id customerId subscriptionId usageMeterId priceId billingPeriodId amount transactionId
  usageDate properties createdAt
"""
BALANCE_FIELDS = """
  usageMeter { slug } subscriptionId availableBalance usedBalance balanceLimit percentUsed
  billingPeriodStart billingPeriodEnd
"""
RESULT_FIELDS = f"""
  __typename
  ... on UsageEventRecorded {{ replayed usageEvent {{ {EVENT_FIELDS} }} balance {{ {BALANCE_FIELDS} }} }}
  ... on UserError {{ code message field }}
  ... on InsufficientBalance {{ meterSlug availableBalance required upgradeOptions {{ slug }} }}
  ... on IdempotencyConflict {{ existingEvent {{ {EVENT_FIELDS} }} }}
"""
CREATE_USAGE_EVENT = f"""
mutation($input: CreateUsageEventInput!) {{ createUsageEvent(input: $input) {{ {RESULT_FIELDS} }} }}
"""
CREATE_USAGE_EVENTS = f"""
mutation($input: [CreateUsageEventInput!]!) {{
  createUsageEvents(input: $input) {{ {RESULT_FIELDS} }}
}}
"""
USAGE_BALANCE = f"""
query($meter: String!, $customer: String, $sub: ID) {{
  usageBalance(meterSlug: $meter, customerExternalId: $customer, subscriptionId: $sub) {{
    {BALANCE_FIELDS}
  }}
}}
"""


def ok(response: Any, field: str) -> Any:
    assert response.status == 200, response.body
    assert response.errors is None, response.errors
    return response.data[field]


async def setup_pricing(gql: GraphQLClient, definition: str = PRICING) -> dict[str, Any]:
    response = await gql(
        """mutation($d: String!) { setupPricingModel(input: {definition: $d}) {
             __typename ... on PricingModelSetUp { pricingModel { id name
               usageMeters { id slug defaultPrice { id slug } prices { id slug } } } }
             ... on UserError { code message field } } }""",
        {"d": definition},
    )
    result = ok(response, "setupPricingModel")
    assert result["__typename"] == "PricingModelSetUp", result
    model: dict[str, Any] = result["pricingModel"]
    return model


async def create_customer(gql: GraphQLClient, external_id: str) -> str:
    response = await gql(
        """mutation($e: String!) { createCustomer(input: {externalId: $e}) {
             __typename ... on CustomerCreated { customer { id } } ... on UserError { message } } }""",
        {"e": external_id},
    )
    result = ok(response, "createCustomer")
    assert result["__typename"] == "CustomerCreated", result
    return str(result["customer"]["id"])


async def subscribe(
    gql: GraphQLClient,
    external_id: str,
    price_slug: str = "pro_monthly",
    start_date: str | None = None,
) -> dict[str, Any]:
    response = await gql(
        """mutation($e: String!, $p: String!, $d: DateTime) {
             createSubscription(input: {customerExternalId: $e, priceSlug: $p, startDate: $d}) {
               __typename ... on SubscriptionCreated { subscription { id status current
                 currentBillingPeriodStart currentBillingPeriodEnd } }
               ... on UserError { code message field } } }""",
        {"e": external_id, "p": price_slug, "d": start_date},
    )
    result = ok(response, "createSubscription")
    assert result["__typename"] == "SubscriptionCreated", result
    sub: dict[str, Any] = result["subscription"]
    return sub


async def customer_on_plan(
    gql: GraphQLClient,
    external_id: str = "user-1",
    price_slug: str = "pro_monthly",
    start_date: str | None = None,
) -> str:
    """A customer subscribed to a plan; returns the subscription id."""
    await create_customer(gql, external_id)
    return str((await subscribe(gql, external_id, price_slug, start_date))["id"])


async def session_token(gql: GraphQLClient, external_id: str, seconds: int = 3600) -> str:
    response = await gql(
        """mutation($e: String!, $s: Int) { createCustomerSession(
             input: {customerExternalId: $e, expiresInSeconds: $s}) {
             __typename ... on CustomerSessionCreated { token } ... on UserError { message } } }""",
        {"e": external_id, "s": seconds},
    )
    result = ok(response, "createCustomerSession")
    assert result["__typename"] == "CustomerSessionCreated", result
    return str(result["token"])


async def record(
    gql: GraphQLClient, token: str | None = "default", **fields: Any
) -> dict[str, Any]:
    """createUsageEvent; `target` defaults to the generations meter."""
    payload: dict[str, Any] = {"target": {"usageMeterSlug": "generations"}, **fields}
    result: dict[str, Any] = ok(
        await gql(CREATE_USAGE_EVENT, {"input": payload}, token=token), "createUsageEvent"
    )
    return result


async def balance(
    gql: GraphQLClient,
    meter: str = "generations",
    customer: str | None = "user-1",
    sub: str | None = None,
    token: str | None = "default",
) -> dict[str, Any] | None:
    result: dict[str, Any] | None = ok(
        await gql(USAGE_BALANCE, {"meter": meter, "customer": customer, "sub": sub}, token=token),
        "usageBalance",
    )
    return result
