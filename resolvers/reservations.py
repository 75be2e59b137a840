"""reserveUsage, finalizeUsageReservation, releaseUsageReservation and voidUsageEvent."""

from __future__ import annotations

from typing import Annotated, Any

import strawberry

from gateway.api.observability import count_usage_results
from gateway.billing.records import BalanceRow
from gateway.callers import authz
from gateway.reservations import holds, voids
from gateway.reservations.records import ReservationReleased, UsageEventVoided, UsageReserved
from resolvers import usage as usage_resolvers
from resolvers._args import checked_input, opt
from schema.billing import UsageBalance
from schema.errors import respond
from schema.reservations import (
    FinalizeUsageReservationInput,
    ReleaseUsageReservationInput,
    ReserveUsageInput,
    UsageReservation,
    VoidUsageEventInput,
)
from schema.reservations import UsageEventVoided as UsageEventVoidedType
from schema.reservations import UsageReservationReleased as ReleasedType
from schema.reservations import UsageReserved as ReservedType
from schema.usage_event import UsageEvent

INPUT = strawberry.argument(description="What to do: see the input type's fields.")


def _balance(row: BalanceRow | None) -> UsageBalance:
    assert row is not None  # the hold's or event's (subscription, meter) has a balance row
    return UsageBalance(row=row)


@checked_input
async def reserve_usage(info: strawberry.Info, input: Annotated[ReserveUsageInput, INPUT]) -> Any:
    ctx = info.context
    authz.require_caller(ctx.caller)
    target = usage_resolvers.target_of(input.target)
    expires = opt(input.expires_in_seconds)
    item = holds.ReserveInput(
        target_kind=target[0],
        target=target[1],
        amount=input.amount,
        subscription_id=None if opt(input.subscription_id) is None else str(input.subscription_id),
        transaction_id=opt(input.transaction_id),
        expires_in_seconds=300 if expires is None else expires,
    )
    result = await holds.reserve_usage(ctx.db, ctx.settings, ctx.caller, item)

    def ok(r: UsageReserved) -> ReservedType:
        return ReservedType(
            reservation=UsageReservation(row=r.reservation),
            replayed=r.replayed,
            balance=_balance(r.balance),
        )

    return respond(result, ok)


@checked_input
async def finalize_usage_reservation(
    info: strawberry.Info, input: Annotated[FinalizeUsageReservationInput, INPUT]
) -> Any:
    ctx = info.context
    authz.require_caller(ctx.caller)
    result = await holds.finalize_usage_reservation(
        ctx.db,
        ctx.settings,
        ctx.caller,
        str(input.reservation_id),
        input.amount,
        opt(input.properties),
    )
    count_usage_results([result])  # gateway_usage_events_total{result}: it records an event
    return usage_resolvers.map_result(result)


@checked_input
async def release_usage_reservation(
    info: strawberry.Info, input: Annotated[ReleaseUsageReservationInput, INPUT]
) -> Any:
    ctx = info.context
    authz.require_caller(ctx.caller)
    result = await holds.release_usage_reservation(ctx.db, ctx.caller, str(input.reservation_id))

    def ok(r: ReservationReleased) -> ReleasedType:
        return ReleasedType(
            reservation=UsageReservation(row=r.reservation), balance=_balance(r.balance)
        )

    return respond(result, ok)


@checked_input
async def void_usage_event(
    info: strawberry.Info, input: Annotated[VoidUsageEventInput, INPUT]
) -> Any:
    ctx = info.context
    authz.require_secret_key(ctx.caller)
    result = await voids.void_usage_event(
        ctx.db, ctx.settings, str(input.usage_event_id), opt(input.reason)
    )

    def ok(r: UsageEventVoided) -> UsageEventVoidedType:
        return UsageEventVoidedType(
            usage_event=UsageEvent.from_json(r.event_data), balance=_balance(r.balance)
        )

    return respond(result, ok)
