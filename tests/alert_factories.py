"""Test data for alerts and webhooks, built through the gateway's own mutations."""

from __future__ import annotations

from typing import Any

from gateway.storage.db import Database
from tests.conftest import GraphQLClient
from tests.factories import ok

# One meter with 1,000 credits a day: a period that ends within seconds is easy to set up.
CREDITS_PRICING = """
name: Credits
usageMeters:
  - usageMeter: {slug: credits, name: Credits}
    prices:
      - {slug: credits_overage, unitPrice: 1, currency: USD, usageEventsPerUnit: 1, isDefault: true}
features:
  - type: usage_credit_grant
    slug: daily_credits
    name: 1,000 credits a day
    usageMeterSlug: credits
    amount: 1000
    renewalFrequency: every_billing_period
products:
  - product: {slug: daily, name: Daily, default: true}
    price: {type: subscription, slug: daily_plan, unitPrice: 0, currency: USD, intervalUnit: day}
    features: [daily_credits]
"""

ALERT_RESULT = """
  __typename
  ... on UsageAlertCreated { alert { id usageMeter { slug } customerExternalId percentUsed
                                     usedAbove availableBelow } }
  ... on UserError { code message field }
"""
CREATE_ALERT = f"""
mutation($input: CreateUsageAlertInput!) {{ createUsageAlert(input: $input) {{ {ALERT_RESULT} }} }}
"""
CREATE_ENDPOINT = """
mutation($input: CreateWebhookEndpointInput!) { createWebhookEndpoint(input: $input) {
  __typename
  ... on WebhookEndpointCreated { secret endpoint { id url eventTypes } }
  ... on UserError { code message field } } }
"""
ENDPOINTS = """
{ webhookEndpoints { id url deliveries { eventId eventType status
    attempts { statusCode error latencyMs } } } }
"""


async def create_alert(gql: GraphQLClient, **fields: Any) -> dict[str, Any]:
    payload = {"usageMeterSlug": "credits", **fields}
    result: dict[str, Any] = ok(await gql(CREATE_ALERT, {"input": payload}), "createUsageAlert")
    return result


async def create_endpoint(gql: GraphQLClient, url: str, **fields: Any) -> dict[str, Any]:
    payload = {"url": url, **fields}
    result: dict[str, Any] = ok(
        await gql(CREATE_ENDPOINT, {"input": payload}), "createWebhookEndpoint"
    )
    return result


async def alert_events(db: Database) -> list[tuple[str, int]]:
    """(type, used balance in the payload) of every outbox row, oldest first."""
    rows = await db.fetch(
        "SELECT type, (payload -> 'data' -> 'balance' ->> 'usedBalance')::bigint AS used"
        " FROM usage_alert_events ORDER BY occurred_at, id"
    )
    return [(r["type"], r["used"]) for r in rows]
