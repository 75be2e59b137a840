"""Reservations and voids: holds on a meter's balance, and reversing a usage event."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Annotated

import strawberry
from strawberry.scalars import JSON

from gateway.reservations.records import ReservationRow
from schema.billing import UsageBalance
from schema.errors import (
    Forbidden,
    IdempotencyConflict,
    InsufficientBalance,
    InvalidInput,
    NoCurrentSubscription,
    NotFound,
)
from schema.usage import UsageEventTarget
from schema.usage_event import UsageEvent


@strawberry.enum
class UsageReservationStatus(Enum):
    HELD = "held"
    FINALIZED = "finalized"
    RELEASED = "released"
    EXPIRED = "expired"


@strawberry.type
class UsageReservation:
    row: strawberry.Private[ReservationRow]

    @strawberry.field
    def id(self) -> strawberry.ID:
        return strawberry.ID(str(self.row.id))

    @strawberry.field(description="The idempotency key of the hold and of the settling event.")
    def transaction_id(self) -> str:
        return self.row.transaction_id

    @strawberry.field
    def amount(self) -> int:
        return self.row.amount

    @strawberry.field(description="EXPIRED once expiresAt has passed unsettled.")
    def status(self) -> UsageReservationStatus:
        return UsageReservationStatus(self.row.status)

    @strawberry.field
    def expires_at(self) -> datetime:
        return self.row.expires_at

    @strawberry.field(description="The event that settled it.")
    def usage_event(self) -> UsageEvent | None:
        data = self.row.usage_event_data
        return None if data is None else UsageEvent.from_json(data)


@strawberry.input
class ReserveUsageInput:
    target: UsageEventTarget
    amount: int = strawberry.field(description="> 0")
    subscription_id: strawberry.ID | None = strawberry.field(
        default=strawberry.UNSET,
        description="Defaults and caller rules as in CreateUsageEventInput.",
    )
    transaction_id: str | None = strawberry.field(
        default=strawberry.UNSET,
        description="Idempotency key of the hold, reused by the event that settles it.",
    )
    expires_in_seconds: int | None = strawberry.field(
        default=300,
        description="An unsettled hold is freed at expiry (status EXPIRED); 1 to 86400.",
    )


@strawberry.type
class UsageReserved:
    reservation: UsageReservation
    replayed: bool = strawberry.field(
        description="true: this transactionId already held this; nothing new was held."
    )
    balance: UsageBalance = strawberry.field(description="The meter's balance after the hold.")


ReserveUsageResult = Annotated[
    UsageReserved
    | InvalidInput
    | NotFound
    | Forbidden
    | NoCurrentSubscription
    | InsufficientBalance
    | IdempotencyConflict,
    strawberry.union("ReserveUsageResult"),
]


@strawberry.input
class FinalizeUsageReservationInput:
    reservation_id: strawberry.ID
    amount: int = strawberry.field(description="The actual amount: more or less than the hold.")
    properties: JSON | None = strawberry.UNSET


@strawberry.input
class ReleaseUsageReservationInput:
    reservation_id: strawberry.ID


@strawberry.type
class UsageReservationReleased:
    reservation: UsageReservation
    balance: UsageBalance


ReleaseUsageReservationResult = Annotated[
    UsageReservationReleased | NotFound | InvalidInput,
    strawberry.union("ReleaseUsageReservationResult"),
]


@strawberry.input
class VoidUsageEventInput:
    usage_event_id: strawberry.ID
    reason: str | None = strawberry.UNSET


@strawberry.type
class UsageEventVoided:
    usage_event: UsageEvent
    balance: UsageBalance


VoidUsageEventResult = Annotated[
    UsageEventVoided | NotFound | InvalidInput | Forbidden,
    strawberry.union("VoidUsageEventResult"),
]
