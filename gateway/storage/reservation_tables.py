"""Reservation tables: holds on a meter's balance (reserveUsage), distributed by customer
(primary key (customer_id, id), the subscription referenced as (customer_id, subscription_id))."""

from __future__ import annotations

import uuid
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import SQLModel

from gateway.storage.columns import (
    _bigint,
    _fk,
    _in,
    _key,
    _owner,
    _subscription_fk,
    _text,
    _ts,
    _uuid,
)

RESERVATION_STATUSES = ("held", "finalized", "released", "expired")


class UsageReservation(SQLModel, table=True):
    """A hold on a meter's balance (reserveUsage). ``held`` counts against availableBalance
    while ``expires_at`` lies ahead; a held row past it is freed on every read, and the sweep
    only rewrites it to ``expired``. The transactionId is the settling event's."""

    __tablename__ = "usage_reservations"
    __table_args__ = (
        _key("id", table="usage_reservations"),
        _subscription_fk("usage_reservations"),
        sa.UniqueConstraint(
            "customer_id",
            "usage_meter_id",
            "transaction_id",
            name="usage_reservations_idempotency_key",
        ),
        sa.CheckConstraint("amount > 0", name="usage_reservations_amount_check"),
        sa.CheckConstraint(
            _in("status", RESERVATION_STATUSES), name="usage_reservations_status_check"
        ),
        sa.CheckConstraint(
            _in("target_kind", ("priceId", "priceSlug", "usageMeterId", "usageMeterSlug")),
            name="usage_reservations_target_kind_check",
        ),
        # What every balance read sums: the open holds of one (subscription, meter).
        sa.Index(
            "usage_reservations_held_idx",
            "subscription_id",
            "usage_meter_id",
            postgresql_include=["amount", "expires_at"],
            postgresql_where=sa.text("status = 'held'"),
        ),
        # The owner look-up by id alone (gateway.billing.owners).
        sa.Index("usage_reservations_id_idx", "id"),
        # What the sweep walks: held rows by expiry.
        sa.Index(
            "usage_reservations_expiry_idx",
            "expires_at",
            postgresql_where=sa.text("status = 'held'"),
        ),
    )
    customer_id: uuid.UUID = _owner()
    id: uuid.UUID = _uuid()
    subscription_id: uuid.UUID = _uuid()
    usage_meter_id: uuid.UUID = _fk("usage_meters.id")
    price_id: uuid.UUID = _fk("prices.id")
    # The target as the caller named it: finalizing records the event against it.
    target_kind: str = _text()
    target: str = _text()
    amount: int = _bigint()
    transaction_id: str = _text()
    status: str = _text()
    expires_at: datetime = _ts()
    usage_event_id: uuid.UUID | None = _uuid(nullable=True)
    settled_at: datetime | None = _ts(nullable=True)
    created_at: datetime | None = _ts(now=True)
