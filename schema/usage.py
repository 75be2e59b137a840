"""Usage-event types and inputs."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

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
from schema.usage_event import UsageEvent


@strawberry.input(one_of=True, description="Exactly one of these names what is charged.")
class UsageEventTarget:
    price_id: strawberry.ID | None = strawberry.field(
        default=strawberry.UNSET, description="A usage price, by id."
    )
    price_slug: str | None = strawberry.field(
        default=strawberry.UNSET, description="A usage price, by slug."
    )
    usage_meter_id: strawberry.ID | None = strawberry.field(
        default=strawberry.UNSET, description="A meter by id: its default price."
    )
    usage_meter_slug: str | None = strawberry.field(
        default=strawberry.UNSET, description="Resolves to the meter's default price."
    )


@strawberry.input(description="One usage event to record.")
class CreateUsageEventInput:
    target: UsageEventTarget = strawberry.field(description="The price or meter charged.")
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
    properties: JSON | None = strawberry.field(
        default=strawberry.UNSET,
        description="A JSON object stored with the event; for COUNT_DISTINCT_PROPERTIES"
        " meters, the value whose distinct occurrences are counted. Default {}.",
    )
    require_balance: bool | None = strawberry.field(
        default=False,
        description="true: record only if availableBalance >= amount, decided atomically.",
    )


@strawberry.type(description="The event is recorded (or was already: see replayed).")
class UsageEventRecorded:
    usage_event: UsageEvent = strawberry.field(description="The recorded event.")
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
    strawberry.union(
        "CreateUsageEventResult",
        description="The recorded event, or why nothing was recorded.",
    ),
]
