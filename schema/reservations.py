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


@strawberry.enum(description="Where a hold stands.")
class UsageReservationStatus(Enum):
    HELD = strawberry.enum_value(
        "held", description="Open: its amount counts in reservedBalance until expiresAt."
    )
    FINALIZED = strawberry.enum_value(
        "finalized", description="Settled by finalizeUsageReservation: see usageEvent."
    )
    RELEASED = strawberry.enum_value(
        "released", description="Given back by releaseUsageReservation; nothing was recorded."
    )
    EXPIRED = strawberry.enum_value(
        "expired", description="expiresAt passed unsettled: the hold no longer counts."
    )


@strawberry.type(
    description="A hold on a meter's balance (reserveUsage), settled by one usage event or"
    " given back."
)
class UsageReservation:
    row: strawberry.Private[ReservationRow]

    @strawberry.field(description="The reservation's id (finalize and release take it).")
    def id(self) -> strawberry.ID:
        return strawberry.ID(str(self.row.id))

    @strawberry.field(description="The idempotency key of the hold and of the settling event.")
    def transaction_id(self) -> str:
        return self.row.transaction_id

    @strawberry.field(description="Events held on the meter's balance; > 0.")
    def amount(self) -> int:
        return self.row.amount

    @strawberry.field(description="EXPIRED once expiresAt has passed unsettled.")
    def status(self) -> UsageReservationStatus:
        return UsageReservationStatus(self.row.status)

    @strawberry.field(description="When an unsettled hold stops counting (status EXPIRED).")
    def expires_at(self) -> datetime:
        return self.row.expires_at

    @strawberry.field(description="The event that settled it; null unless FINALIZED.")
    def usage_event(self) -> UsageEvent | None:
        data = self.row.usage_event_data
        return None if data is None else UsageEvent.from_json(data)


@strawberry.input(description="A hold to place on a meter's balance.")
class ReserveUsageInput:
    target: UsageEventTarget = strawberry.field(
        description="The price or meter charged; a customer token may name only a meter or its"
        " default price."
    )
    amount: int = strawberry.field(
        description="Events to hold; > 0. Held only if availableBalance >= amount."
    )
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


@strawberry.type(description="The amount is held (or already was: see replayed).")
class UsageReserved:
    reservation: UsageReservation = strawberry.field(description="The hold.")
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
    strawberry.union(
        "ReserveUsageResult",
        description="The hold, or why nothing was held (InsufficientBalance: availableBalance"
        " < amount).",
    ),
]


@strawberry.input(description="Settle a hold with the actual usage.")
class FinalizeUsageReservationInput:
    reservation_id: strawberry.ID = strawberry.field(description="UsageReservation.id.")
    amount: int = strawberry.field(
        description="The actual amount, in events; > 0, more or less than the hold."
    )
    properties: JSON | None = strawberry.field(
        default=strawberry.UNSET,
        description="A JSON object stored with the settling event, as in"
        " CreateUsageEventInput. Default {}.",
    )


@strawberry.input(description="Give a hold back without recording usage.")
class ReleaseUsageReservationInput:
    reservation_id: strawberry.ID = strawberry.field(description="UsageReservation.id.")


@strawberry.type(description="The hold is given back (or was already released or expired).")
class UsageReservationReleased:
    reservation: UsageReservation = strawberry.field(description="The hold, as it is now.")
    balance: UsageBalance = strawberry.field(description="The meter's balance after the release.")


ReleaseUsageReservationResult = Annotated[
    UsageReservationReleased | NotFound | InvalidInput,
    strawberry.union(
        "ReleaseUsageReservationResult",
        description="The released hold, or why nothing changed (a finalized hold: InvalidInput;"
        " a missing or another customer's: NotFound).",
    ),
]


@strawberry.input(description="A usage event to reverse (secret key only).")
class VoidUsageEventInput:
    usage_event_id: strawberry.ID = strawberry.field(
        description="UsageEvent.id; the event must be in its subscription's current billing period."
    )
    reason: str | None = strawberry.field(
        default=strawberry.UNSET,
        description="Why, kept as UsageEvent.voidReason; omitted: null.",
    )


@strawberry.type(description="The event is voided (or already was): it no longer counts.")
class UsageEventVoided:
    usage_event: UsageEvent = strawberry.field(description="The event, with voidedAt set.")
    balance: UsageBalance = strawberry.field(description="The meter's balance after the void.")


VoidUsageEventResult = Annotated[
    UsageEventVoided | NotFound | InvalidInput | Forbidden,
    strawberry.union(
        "VoidUsageEventResult",
        description="The voided event, or why nothing changed (an event of an earlier period:"
        " InvalidInput).",
    ),
]
