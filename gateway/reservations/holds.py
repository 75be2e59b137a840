"""Holds on a meter's balance: reserve, finalize (one usage event), release.

What needs no data is checked here (the same checks and caller defaults as usage events);
everything else is decided by one call of a database function: ``reserve_usage()``,
``finalize_usage_reservation()`` or ``release_usage_reservation()``. One round trip each
(besides authentication).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import uuid_utils

from gateway.billing import owners, usage
from gateway.billing.usage_properties import check_properties
from gateway.callers.auth import Caller
from gateway.errors import UserError, invalid, not_found
from gateway.reservations.records import (
    ReservationReleased,
    ReservationRow,
    UsageReserved,
    balance_of,
)
from gateway.settings import Settings
from gateway.storage.db import Database

# A hold is for work in flight (an LLM call), not a budget: at most a day.
MAX_HOLD_SECONDS = 86_400


@dataclass(frozen=True)
class ReserveInput:
    target_kind: usage.TargetKind
    target: str
    amount: int
    subscription_id: str | None = None
    transaction_id: str | None = None
    expires_in_seconds: int = 300


def _reservation_id(text: str) -> uuid.UUID | UserError:
    try:
        return uuid.UUID(text)
    except ValueError:
        return not_found(f"no reservation {text}", "input", "reservationId")


def _error(data: dict[str, Any]) -> UserError | None:
    if data["status"] != "error":
        return None
    result = usage.usage_result(data)
    assert isinstance(result, UserError)
    return result


def _no_reservation(rid: uuid.UUID) -> UserError:
    return not_found(f"no reservation {rid}", "input", "reservationId")


async def reserve_usage(
    db: Database, settings: Settings, caller: Caller, item: ReserveInput
) -> UsageReserved | UserError:
    if not 1 <= item.expires_in_seconds <= MAX_HOLD_SECONDS:
        return invalid(
            f"expiresInSeconds must be 1 to {MAX_HOLD_SECONDS}", "input", "expiresInSeconds"
        )
    prepared = usage.prepare_usage(
        caller,
        usage.UsageInput(
            target_kind=item.target_kind,
            target=item.target,
            amount=item.amount,
            subscription_id=item.subscription_id,
            transaction_id=item.transaction_id,
        ),
        settings,
    )
    if isinstance(prepared, UserError):
        return prepared
    sub_id = None if prepared["subscription_id"] is None else uuid.UUID(prepared["subscription_id"])
    customer_id = await owners.usage_owner(db, caller, sub_id)
    if customer_id is None:
        return not_found(
            f"no subscription {prepared['subscription_id']}", "input", "subscriptionId"
        )

    async def call() -> Any:
        return await db.fetchval(
            "SELECT reserve_usage($1::uuid, $2::uuid, $3::uuid, $4::uuid, $5, $6, $7, $8, $9)",
            customer_id,
            uuid.UUID(prepared["event_id"]),
            caller.customer_id,
            None if prepared["subscription_id"] is None else uuid.UUID(prepared["subscription_id"]),
            prepared["target_kind"],
            prepared["target"],
            prepared["amount"],
            prepared["transaction_id"],
            timedelta(seconds=item.expires_in_seconds),
        )

    data = await usage.with_retry(call)
    error = _error(data)
    if error is not None:
        return error
    reservation = ReservationRow.from_json(data["reservation"])
    owners.remember_reservation(reservation.id, customer_id)
    return UsageReserved(
        reservation=reservation,
        replayed=data["status"] == "replayed",
        balance=balance_of(data),
    )


async def finalize_usage_reservation(
    db: Database,
    settings: Settings,
    caller: Caller,
    reservation_id: str,
    amount: int,
    properties: Any = None,
) -> usage.UsageResult:
    """Records the actual amount under the reservation's transactionId and frees the hold."""
    rid = _reservation_id(reservation_id)
    if isinstance(rid, UserError):
        return rid
    if amount <= 0 or amount > usage.MAX_AMOUNT:
        return invalid("amount must be a positive integer", "input", "amount")
    checked = check_properties(properties, settings)
    if isinstance(checked, UserError):
        return checked
    backdating, future = usage.usage_intervals(settings)
    owner = await owners.reservation_owner_argument(db, caller, rid, "$4::uuid")
    if owner is None:
        return _no_reservation(rid)
    customer, customer_id = owner

    async def call() -> Any:
        return await db.fetchval(
            f"SELECT finalize_usage_reservation({customer}, $2::uuid, $3::uuid, $4::uuid, $5,"
            " $6::jsonb, $7, $8)",
            customer_id,
            uuid.UUID(str(uuid_utils.uuid7())),
            caller.customer_id,
            rid,
            amount,
            checked,
            backdating,
            future,
        )

    result: usage.UsageResult = usage.usage_result(await usage.with_retry(call))
    if isinstance(result, usage.UsageRecorded):
        owner_id = uuid.UUID(result.event_data["customer_id"])
        owners.remember_reservation(rid, owner_id)
        owners.remember_event(uuid.UUID(result.event_data["id"]), owner_id)
    return result


async def release_usage_reservation(
    db: Database, caller: Caller, reservation_id: str
) -> ReservationReleased | UserError:
    rid = _reservation_id(reservation_id)
    if isinstance(rid, UserError):
        return rid
    owner = await owners.reservation_owner_argument(db, caller, rid, "$3::uuid")
    if owner is None:
        return _no_reservation(rid)
    customer, customer_id = owner
    data = await db.fetchval(
        f"SELECT release_usage_reservation({customer}, $2::uuid, $3::uuid)",
        customer_id,
        caller.customer_id,
        rid,
    )
    error = _error(data)
    if error is not None:
        return error
    return ReservationReleased(
        reservation=ReservationRow.from_json(data["reservation"]), balance=balance_of(data)
    )
