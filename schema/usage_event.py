"""The usage event type: what a usage mutation recorded, and what a conflict points at."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

import strawberry
from strawberry.scalars import JSON


@strawberry.type
class UsageEvent:
    id: strawberry.ID
    customer_id: strawberry.ID
    subscription_id: strawberry.ID
    usage_meter_id: strawberry.ID
    price_id: strawberry.ID = strawberry.field(description="The resolved price.")
    billing_period_id: strawberry.ID | None
    amount: int
    transaction_id: str
    usage_date: datetime
    properties: JSON
    created_at: datetime
    voided_at: datetime | None = strawberry.field(
        default=None, description="Set by voidUsageEvent; a voided event no longer counts."
    )
    void_reason: str | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> UsageEvent:
        """From the JSON of record_usage_event(): its ids are already canonical text."""
        return cls(
            id=strawberry.ID(data["id"]),
            customer_id=strawberry.ID(data["customer_id"]),
            subscription_id=strawberry.ID(data["subscription_id"]),
            usage_meter_id=strawberry.ID(data["usage_meter_id"]),
            price_id=strawberry.ID(data["price_id"]),
            billing_period_id=None
            if data["billing_period_id"] is None
            else strawberry.ID(data["billing_period_id"]),
            amount=int(data["amount"]),
            transaction_id=data["transaction_id"],
            usage_date=datetime.fromisoformat(data["usage_date"]),
            properties=cast(JSON, data["properties"]),
            created_at=datetime.fromisoformat(data["created_at"]),
            voided_at=None
            if data.get("voided_at") is None
            else datetime.fromisoformat(data["voided_at"]),
            void_reason=data.get("void_reason"),
        )
