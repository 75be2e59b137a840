"""The usage event type: what a usage mutation recorded, and what a conflict points at."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

import strawberry
from strawberry.scalars import JSON

from gateway.billing.usage_history import UsageEventRow


@strawberry.type(description="One recorded usage event: an amount of usage on one meter.")
class UsageEvent:
    id: strawberry.ID = strawberry.field(description="The event's id (time-ordered UUIDv7).")
    customer_id: strawberry.ID = strawberry.field(description="The customer charged.")
    subscription_id: strawberry.ID = strawberry.field(
        description="The subscription the usage is charged to."
    )
    usage_meter_id: strawberry.ID = strawberry.field(description="The meter the usage is on.")
    price_id: strawberry.ID = strawberry.field(description="The resolved price.")
    billing_period_id: strawberry.ID | None = strawberry.field(
        description="The billing period the usage counts in, decided by usageDate (always"
        " set by this gateway; nullable in the contract)."
    )
    amount: int = strawberry.field(description="Usage, in events of the meter; > 0.")
    transaction_id: str = strawberry.field(
        description="The idempotency key: unique per customer and meter."
    )
    usage_date: datetime = strawberry.field(
        description="When the usage happened (decides the billing period)."
    )
    properties: JSON = strawberry.field(description="The JSON object recorded with the event.")
    created_at: datetime = strawberry.field(description="When the gateway recorded it.")
    voided_at: datetime | None = strawberry.field(
        default=None, description="Set by voidUsageEvent; a voided event no longer counts."
    )
    void_reason: str | None = strawberry.field(
        default=None, description="Why the event was voided, as given to voidUsageEvent."
    )

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> UsageEvent:
        """From the JSON of record_usage_event(): its ids are already canonical text (taken
        as they are: strawberry.ID is str at run time, and this runs for every answer)."""
        voided_at = data.get("voided_at")
        return cls(
            id=data["id"],
            customer_id=data["customer_id"],
            subscription_id=data["subscription_id"],
            usage_meter_id=data["usage_meter_id"],
            price_id=data["price_id"],
            billing_period_id=data["billing_period_id"],
            amount=int(data["amount"]),
            transaction_id=data["transaction_id"],
            usage_date=datetime.fromisoformat(data["usage_date"]),
            properties=cast(JSON, data["properties"]),
            created_at=datetime.fromisoformat(data["created_at"]),
            voided_at=None if voided_at is None else datetime.fromisoformat(voided_at),
            void_reason=data.get("void_reason"),
        )

    @classmethod
    def of(cls, row: UsageEventRow) -> UsageEvent:
        """From a usage history row."""
        return cls(
            id=strawberry.ID(str(row.id)),
            customer_id=strawberry.ID(str(row.customer_id)),
            subscription_id=strawberry.ID(str(row.subscription_id)),
            usage_meter_id=strawberry.ID(str(row.usage_meter_id)),
            price_id=strawberry.ID(str(row.price_id)),
            billing_period_id=None
            if row.billing_period_id is None
            else strawberry.ID(str(row.billing_period_id)),
            amount=row.amount,
            transaction_id=row.transaction_id,
            usage_date=row.usage_date,
            properties=cast(JSON, row.properties),
            created_at=row.created_at,
        )
