"""GraphQL documents and helpers for reservations and voids."""

from __future__ import annotations

from typing import Any

from tests.conftest import GraphQLClient
from tests.factories import BALANCE_FIELDS, EVENT_FIELDS, RESULT_FIELDS, ok

BALANCE = BALANCE_FIELDS + " reservedBalance"
RESERVATION = f"id transactionId amount status expiresAt usageEvent {{ {EVENT_FIELDS} voidedAt }}"
ERRORS = """
  ... on UserError { code message field }
  ... on InsufficientBalance { availableBalance required }
  ... on IdempotencyConflict { existingEvent { id amount transactionId } }
"""
RESERVE = f"""
mutation($input: ReserveUsageInput!) {{ reserveUsage(input: $input) {{
  __typename
  ... on UsageReserved {{ replayed reservation {{ {RESERVATION} }} balance {{ {BALANCE} }} }}
  {ERRORS}
}} }}
"""
FINALIZE = f"""
mutation($input: FinalizeUsageReservationInput!) {{ finalizeUsageReservation(input: $input) {{
  {RESULT_FIELDS}
  ... on UsageEventRecorded {{ usageEvent {{ voidedAt voidReason }} balance {{ reservedBalance }} }}
}} }}
"""
RELEASE = f"""
mutation($input: ReleaseUsageReservationInput!) {{ releaseUsageReservation(input: $input) {{
  __typename
  ... on UsageReservationReleased {{ reservation {{ {RESERVATION} }} balance {{ {BALANCE} }} }}
  ... on UserError {{ code message field }}
}} }}
"""
VOID = f"""
mutation($input: VoidUsageEventInput!) {{ voidUsageEvent(input: $input) {{
  __typename
  ... on UsageEventVoided {{ usageEvent {{ {EVENT_FIELDS} voidedAt voidReason }}
                             balance {{ {BALANCE} }} }}
  ... on UserError {{ code message field }}
}} }}
"""
BALANCE_QUERY = f"""
query($meter: String!, $customer: String, $sub: ID) {{
  usageBalance(meterSlug: $meter, customerExternalId: $customer, subscriptionId: $sub) {{
    {BALANCE}
  }}
}}
"""
CHARGES = """
query($customer: String!) { billing(customerExternalId: $customer) {
  currentCharges { price { slug } overageEvents units amount currency }
} }
"""


async def reserve(
    gql: GraphQLClient, token: str | None = "default", **fields: Any
) -> dict[str, Any]:
    payload: dict[str, Any] = {"target": {"usageMeterSlug": "generations"}, **fields}
    result: dict[str, Any] = ok(await gql(RESERVE, {"input": payload}, token=token), "reserveUsage")
    return result


async def finalize(
    gql: GraphQLClient, reservation_id: str, amount: int, token: str | None = "default", **more: Any
) -> dict[str, Any]:
    payload = {"reservationId": reservation_id, "amount": amount, **more}
    result: dict[str, Any] = ok(
        await gql(FINALIZE, {"input": payload}, token=token), "finalizeUsageReservation"
    )
    return result


async def release(
    gql: GraphQLClient, reservation_id: str, token: str | None = "default"
) -> dict[str, Any]:
    result: dict[str, Any] = ok(
        await gql(RELEASE, {"input": {"reservationId": reservation_id}}, token=token),
        "releaseUsageReservation",
    )
    return result


async def void(gql: GraphQLClient, event_id: str, reason: str | None = None) -> dict[str, Any]:
    payload: dict[str, Any] = {"usageEventId": event_id}
    if reason is not None:
        payload["reason"] = reason
    result: dict[str, Any] = ok(await gql(VOID, {"input": payload}), "voidUsageEvent")
    return result


async def full_balance(
    gql: GraphQLClient, customer: str = "user-1", meter: str = "generations"
) -> dict[str, Any] | None:
    result: dict[str, Any] | None = ok(
        await gql(BALANCE_QUERY, {"meter": meter, "customer": customer}), "usageBalance"
    )
    return result


async def charges(gql: GraphQLClient, customer: str) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = ok(await gql(CHARGES, {"customer": customer}), "billing")[
        "currentCharges"
    ]
    return result
