"""Usage tables: per-(subscription, meter) balances and totals, distinct keys and the events.

All distributed by customer (gateway.storage.distribution): every primary key, unique
constraint and foreign key starts with ``customer_id``; the subscription is referenced as
(customer_id, subscription_id).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlmodel import Field, SQLModel

from gateway.storage.columns import (
    _bigint,
    _bool,
    _fk,
    _key,
    _owner,
    _subscription_fk,
    _text,
    _ts,
    _uuid,
)


class MeterBalance(SQLModel, table=True):
    """One row per (subscription, meter) that has usage: the lock that serialises allocation,
    and the sequence that orders events for recomputation."""

    __tablename__ = "meter_balances"
    __table_args__ = (
        _key("subscription_id", "usage_meter_id", table="meter_balances"),
        _subscription_fk("meter_balances"),
    )
    customer_id: uuid.UUID = _owner()
    subscription_id: uuid.UUID = _uuid()
    usage_meter_id: uuid.UUID = _fk("usage_meters.id")
    event_seq: int = _bigint(default=0)
    # The latest billing period whose recurring credit grants have been issued.
    grants_period_start: datetime | None = _ts(nullable=True)


class UsageTotal(SQLModel, table=True):
    """Usage per (subscription, meter, billing period, price): what balances and charges read."""

    __tablename__ = "usage_totals"
    __table_args__ = (
        sa.CheckConstraint(
            "used >= 0 AND covered >= 0 AND uncovered >= 0 AND used = covered + uncovered",
            name="usage_totals_sum_check",
        ),
        _key("subscription_id", "usage_meter_id", "period_start", "price_id", table="usage_totals"),
        _subscription_fk("usage_totals"),
    )
    customer_id: uuid.UUID = _owner()
    subscription_id: uuid.UUID = _uuid()
    usage_meter_id: uuid.UUID = _fk("usage_meters.id")
    period_start: datetime = _ts()
    price_id: uuid.UUID = _fk("prices.id")
    period_end: datetime = _ts()
    used: int = _bigint(default=0)
    covered: int = _bigint(default=0)
    uncovered: int = _bigint(default=0)


class UsageDistinctKey(SQLModel, table=True):
    """Property sets already counted by a COUNT_DISTINCT_PROPERTIES meter in a period."""

    __tablename__ = "usage_distinct_keys"
    __table_args__ = (
        _key(
            "subscription_id",
            "usage_meter_id",
            "period_start",
            "properties_hash",
            table="usage_distinct_keys",
        ),
        _subscription_fk("usage_distinct_keys"),
    )
    customer_id: uuid.UUID = _owner()
    subscription_id: uuid.UUID = _uuid()
    usage_meter_id: uuid.UUID = _fk("usage_meters.id")
    period_start: datetime = _ts()
    properties_hash: str = _text()


class UsageEvent(SQLModel, table=True):
    """Append-only. ``transaction_id`` is unique per (customer, meter): the idempotency key."""

    __tablename__ = "usage_events"
    __table_args__ = (
        _key("id", table="usage_events"),
        _subscription_fk("usage_events"),
        sa.UniqueConstraint(
            "customer_id", "usage_meter_id", "transaction_id", name="usage_events_idempotency_key"
        ),
        sa.CheckConstraint("amount > 0", name="usage_events_amount_check"),
        sa.CheckConstraint(
            "consumed >= 0 AND covered >= 0 AND covered <= consumed",
            name="usage_events_allocation_check",
        ),
        sa.Index("usage_events_sequence_idx", "subscription_id", "usage_meter_id", "seq"),
        # Usage history (Billing.usageEvents), a customer's events by id newest first, is
        # the primary key's index (customer_id, id). The owner look-up by id alone (a hash
        # index: equality only, so the history's ordered scans keep the primary key):
        sa.Index("usage_events_id_idx", "id", postgresql_using="hash"),
    )
    customer_id: uuid.UUID = _owner()
    id: uuid.UUID = _uuid()
    subscription_id: uuid.UUID = _uuid()
    usage_meter_id: uuid.UUID = _fk("usage_meters.id")
    price_id: uuid.UUID = _fk("prices.id")
    billing_period_id: uuid.UUID = _uuid()
    period_start: datetime = _ts()
    period_end: datetime = _ts()
    amount: int = _bigint()
    consumed: int = _bigint()
    covered: int = _bigint()
    seq: int = _bigint()
    transaction_id: str = _text()
    usage_date: datetime = _ts()
    properties: dict[str, Any] = Field(
        default_factory=dict,
        sa_column=sa.Column(JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
    )
    properties_given: bool = _bool(False)
    usage_date_given: bool = _bool(False)
    created_at: datetime | None = _ts(now=True)
    # What the event took from which grant (parallel arrays, allocation order), so a void
    # gives back exactly that. NULL only for events recorded before the arrays existed.
    take_grant_ids: list[uuid.UUID] | None = Field(
        default=None, sa_column=sa.Column(sa.ARRAY(UUID(as_uuid=True)), nullable=True)
    )
    take_amounts: list[int] | None = Field(
        default=None, sa_column=sa.Column(sa.ARRAY(sa.BigInteger), nullable=True)
    )
    # A void (voidUsageEvent): a voided event no longer counts anywhere.
    voided_at: datetime | None = _ts(nullable=True)
    void_reason: str | None = _text(nullable=True)
