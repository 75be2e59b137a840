"""Usage-event types and inputs."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, cast

import strawberry
from strawberry.scalars import JSON

from schema.billing import UsageBalance
from schema.errors import (
    Forbidden,
    IdempotencyConflict,
    InsufficientBalance,
    InvalidInput,
    NoCurrentSubscription,
    NotFound,
)


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
        )


@strawberry.input(one_of=True, description="Exactly one of these names what is charged.")
class UsageEventTarget:
    price_id: strawberry.ID | None = strawberry.UNSET
    price_slug: str | None = strawberry.UNSET
    usage_meter_id: strawberry.ID | None = strawberry.UNSET
    usage_meter_slug: str | None = strawberry.field(
        default=strawberry.UNSET, description="Resolves to the meter's default price."
    )


@strawberry.input
class CreateUsageEventInput:
    target: UsageEventTarget
    amount: int | None = strawberry.field(
        default=strawberry.UNSET,
        description="> 0; a customer token defaults it to 1; a secret key must give it.",
    )
    subscription_id: strawberry.ID | None = strawberry.field(
        default=strawberry.UNSET,
        description="A customer token defaults it to the current subscription;"
        " a secret key must give it.",
    )
    transaction_id: str | None = strawberry.field(
        default=strawberry.UNSET,
        description="Idempotency key, unique per customer and meter; a customer token gets one"
        " generated; a secret key must give it.",
    )
    usage_date: datetime | None = strawberry.field(
        default=strawberry.UNSET, description="Default now; decides the billing period."
    )
    properties: JSON | None = strawberry.UNSET
    require_balance: bool | None = strawberry.field(
        default=False,
        description="true: record only if availableBalance >= amount, decided atomically.",
    )


@strawberry.type
class UsageEventRecorded:
    usage_event: UsageEvent
    replayed: bool = strawberry.field(
        description="true: this transactionId was already recorded; nothing new was charged."
    )
    balance: UsageBalance | None = strawberry.field(
        description="The meter's balance after this event."
    )


CreateUsageEventResult = Annotated[
    UsageEventRecorded
    | InvalidInput
    | NotFound
    | Forbidden
    | NoCurrentSubscription
    | InsufficientBalance
    | IdempotencyConflict,
    strawberry.union("CreateUsageEventResult"),
]
