"""The data model as SQLModel tables. Alembic migrations are generated from this metadata.

Invariants live in the database (checks, unique and partial unique indexes), not only in
Python. Every table that grows with usage carries ``customer_id`` so the data can later be
distributed by customer; ids are UUIDv7 (time-ordered, no global sequence).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlmodel import Field, SQLModel

NOW = sa.text("now()")
UUID_V7 = sa.text("uuid_v7()")

CURRENT_STATUSES = ("trialing", "active", "past_due", "unpaid", "cancellation_scheduled")
SUBSCRIPTION_STATUSES = (
    *CURRENT_STATUSES,
    "incomplete",
    "incomplete_expired",
    "canceled",
    "paused",
)


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _id() -> Any:
    return Field(
        default=None,
        sa_column=sa.Column(UUID(as_uuid=True), primary_key=True, server_default=UUID_V7),
    )


def _fk(target: str, *, nullable: bool = False, index: bool = False) -> Any:
    return Field(
        default=None,
        sa_column=sa.Column(
            UUID(as_uuid=True), sa.ForeignKey(target), nullable=nullable, index=index
        ),
    )


def _uuid(*, nullable: bool = False) -> Any:
    return Field(default=None, sa_column=sa.Column(UUID(as_uuid=True), nullable=nullable))


def _text(*, nullable: bool = False) -> Any:
    return Field(default=None, sa_column=sa.Column(sa.Text, nullable=nullable))


def _bigint(*, nullable: bool = False, default: int | None = None) -> Any:
    server_default = sa.text(str(default)) if default is not None else None
    return Field(
        default=default,
        sa_column=sa.Column(sa.BigInteger, nullable=nullable, server_default=server_default),
    )


def _int(*, nullable: bool = False) -> Any:
    return Field(default=None, sa_column=sa.Column(sa.Integer, nullable=nullable))


def _bool(default: bool) -> Any:
    return Field(
        default=default,
        sa_column=sa.Column(
            sa.Boolean, nullable=False, server_default=sa.text("true" if default else "false")
        ),
    )


def _ts(*, nullable: bool = False, now: bool = False) -> Any:
    return Field(
        default=None,
        sa_column=sa.Column(
            sa.DateTime(timezone=True), nullable=nullable, server_default=NOW if now else None
        ),
    )


class PricingModel(SQLModel, table=True):
    __tablename__ = "pricing_models"
    __table_args__ = (
        sa.Index(
            "pricing_models_one_default",
            "is_default",
            unique=True,
            postgresql_where=sa.text("is_default"),
        ),
    )
    id: uuid.UUID | None = _id()
    name: str = _text()
    is_default: bool = _bool(False)
    created_at: datetime | None = _ts(now=True)


class UsageMeter(SQLModel, table=True):
    __tablename__ = "usage_meters"
    __table_args__ = (
        sa.UniqueConstraint("pricing_model_id", "slug", name="usage_meters_slug_key"),
        sa.CheckConstraint(
            _in("aggregation_type", ("sum", "count_distinct_properties")),
            name="usage_meters_aggregation_type_check",
        ),
    )
    id: uuid.UUID | None = _id()
    pricing_model_id: uuid.UUID = _fk("pricing_models.id")
    slug: str = _text()
    name: str = _text()
    aggregation_type: str = _text()
    created_at: datetime | None = _ts(now=True)


class Product(SQLModel, table=True):
    __tablename__ = "products"
    __table_args__ = (sa.UniqueConstraint("pricing_model_id", "slug", name="products_slug_key"),)
    id: uuid.UUID | None = _id()
    pricing_model_id: uuid.UUID = _fk("pricing_models.id")
    slug: str = _text()
    name: str = _text()
    description: str | None = _text(nullable=True)
    is_default: bool = _bool(False)
    active: bool = _bool(True)
    archived_at: datetime | None = _ts(nullable=True)
    created_at: datetime | None = _ts(now=True)


class Price(SQLModel, table=True):
    __tablename__ = "prices"
    __table_args__ = (
        sa.UniqueConstraint("pricing_model_id", "slug", name="prices_slug_key"),
        sa.CheckConstraint(
            _in("type", ("subscription", "single_payment", "usage")), name="prices_type_check"
        ),
        sa.CheckConstraint("unit_price >= 0", name="prices_unit_price_check"),
        sa.CheckConstraint("currency ~ '^[A-Z]{3}$'", name="prices_currency_check"),
        sa.CheckConstraint(
            "(type = 'usage') = (usage_meter_id IS NOT NULL AND product_id IS NULL"
            " AND usage_events_per_unit IS NOT NULL)",
            name="prices_usage_owner_check",
        ),
        sa.CheckConstraint(
            "type = 'usage' OR (product_id IS NOT NULL AND usage_meter_id IS NULL)",
            name="prices_product_owner_check",
        ),
        sa.CheckConstraint(
            "(type <> 'subscription' OR (interval_unit IS NOT NULL AND interval_count IS NOT NULL))"
            " AND (type <> 'single_payment' OR (interval_unit IS NULL AND interval_count IS NULL))"
            " AND ((interval_unit IS NULL) = (interval_count IS NULL))",
            name="prices_interval_check",
        ),
        sa.CheckConstraint(
            "interval_unit IS NULL OR " + _in("interval_unit", ("day", "week", "month", "year")),
            name="prices_interval_unit_check",
        ),
        sa.CheckConstraint(
            "interval_count IS NULL OR interval_count > 0", name="prices_interval_count_check"
        ),
        sa.CheckConstraint(
            "usage_events_per_unit IS NULL OR usage_events_per_unit > 0",
            name="prices_usage_events_per_unit_check",
        ),
        sa.CheckConstraint(
            "(slug LIKE '%\\_no\\_charge') = is_no_charge", name="prices_no_charge_slug_check"
        ),
        sa.CheckConstraint(
            "NOT is_no_charge OR (type = 'usage' AND unit_price = 0"
            " AND usage_events_per_unit = 1 AND active)",
            name="prices_no_charge_shape_check",
        ),
        sa.CheckConstraint("NOT is_default OR active", name="prices_default_active_check"),
        sa.Index(
            "prices_one_default_per_meter",
            "usage_meter_id",
            unique=True,
            postgresql_where=sa.text("is_default AND type = 'usage'"),
        ),
        sa.Index(
            "prices_one_default_per_product",
            "product_id",
            unique=True,
            postgresql_where=sa.text("is_default AND type <> 'usage'"),
        ),
        sa.Index(
            "prices_one_no_charge_per_meter",
            "usage_meter_id",
            unique=True,
            postgresql_where=sa.text("is_no_charge"),
        ),
    )
    id: uuid.UUID | None = _id()
    pricing_model_id: uuid.UUID = _fk("pricing_models.id")
    product_id: uuid.UUID | None = _fk("products.id", nullable=True)
    usage_meter_id: uuid.UUID | None = _fk("usage_meters.id", nullable=True)
    slug: str = _text()
    name: str | None = _text(nullable=True)
    type: str = _text()
    unit_price: int = _bigint()
    currency: str = _text()
    interval_unit: str | None = _text(nullable=True)
    interval_count: int | None = _int(nullable=True)
    usage_events_per_unit: int | None = _int(nullable=True)
    is_default: bool = _bool(False)
    is_no_charge: bool = _bool(False)
    active: bool = _bool(True)
    archived_at: datetime | None = _ts(nullable=True)
    created_at: datetime | None = _ts(now=True)


class Feature(SQLModel, table=True):
    __tablename__ = "features"
    __table_args__ = (
        sa.UniqueConstraint("pricing_model_id", "slug", name="features_slug_key"),
        sa.CheckConstraint(
            _in("type", ("toggle", "usage_credit_grant")), name="features_type_check"
        ),
        sa.CheckConstraint(
            "(type = 'usage_credit_grant') = (amount IS NOT NULL AND usage_meter_id IS NOT NULL"
            " AND renewal_frequency IS NOT NULL)",
            name="features_grant_shape_check",
        ),
        sa.CheckConstraint("amount IS NULL OR amount > 0", name="features_amount_check"),
        sa.CheckConstraint(
            "renewal_frequency IS NULL OR "
            + _in("renewal_frequency", ("once", "every_billing_period")),
            name="features_renewal_frequency_check",
        ),
    )
    id: uuid.UUID | None = _id()
    pricing_model_id: uuid.UUID = _fk("pricing_models.id")
    slug: str = _text()
    name: str = _text()
    description: str | None = _text(nullable=True)
    type: str = _text()
    amount: int | None = _bigint(nullable=True)
    usage_meter_id: uuid.UUID | None = _fk("usage_meters.id", nullable=True)
    renewal_frequency: str | None = _text(nullable=True)
    active: bool = _bool(True)
    archived_at: datetime | None = _ts(nullable=True)
    created_at: datetime | None = _ts(now=True)


class ProductFeature(SQLModel, table=True):
    __tablename__ = "product_features"
    product_id: uuid.UUID = Field(
        sa_column=sa.Column(UUID(as_uuid=True), sa.ForeignKey("products.id"), primary_key=True)
    )
    feature_id: uuid.UUID = Field(
        sa_column=sa.Column(UUID(as_uuid=True), sa.ForeignKey("features.id"), primary_key=True)
    )


class Customer(SQLModel, table=True):
    __tablename__ = "customers"
    id: uuid.UUID | None = _id()
    pricing_model_id: uuid.UUID = _fk("pricing_models.id")
    external_id: str = Field(sa_column=sa.Column(sa.Text, nullable=False, unique=True))
    name: str | None = _text(nullable=True)
    email: str | None = _text(nullable=True)
    created_at: datetime | None = _ts(now=True)
    # revokeCustomerSessions: session tokens issued before this instant are refused.
    sessions_revoked_before: datetime | None = _ts(nullable=True)


class Subscription(SQLModel, table=True):
    __tablename__ = "subscriptions"
    __table_args__ = (
        sa.CheckConstraint(_in("status", SUBSCRIPTION_STATUSES), name="subscriptions_status_check"),
        sa.Index("subscriptions_customer_idx", "customer_id", "created_at"),
    )
    id: uuid.UUID | None = _id()
    customer_id: uuid.UUID = _fk("customers.id")
    price_id: uuid.UUID = _fk("prices.id")
    product_id: uuid.UUID = _fk("products.id")
    status: str = _text()
    start_date: datetime = _ts()
    interval_unit: str = _text()
    interval_count: int = _int()
    canceled_at: datetime | None = _ts(nullable=True)
    created_at: datetime | None = _ts(now=True)


class CreditGrant(SQLModel, table=True):
    """Credits on one meter of one subscription. ``consumed`` moves as usage is recorded."""

    __tablename__ = "credit_grants"
    __table_args__ = (
        sa.CheckConstraint(
            _in("source", ("once", "every_billing_period", "manual")),
            name="credit_grants_source_check",
        ),
        sa.CheckConstraint("amount > 0", name="credit_grants_amount_check"),
        sa.CheckConstraint(
            "consumed >= 0 AND consumed <= amount", name="credit_grants_consumed_check"
        ),
        sa.CheckConstraint(
            "expires_at IS NULL OR expires_at > granted_at", name="credit_grants_expiry_check"
        ),
        sa.UniqueConstraint(
            "subscription_id", "feature_id", "granted_at", name="credit_grants_issue_key"
        ),
        sa.Index("credit_grants_balance_idx", "subscription_id", "usage_meter_id", "expires_at"),
    )
    id: uuid.UUID | None = _id()
    customer_id: uuid.UUID = _fk("customers.id")
    subscription_id: uuid.UUID = _fk("subscriptions.id")
    usage_meter_id: uuid.UUID = _fk("usage_meters.id")
    feature_id: uuid.UUID | None = _fk("features.id", nullable=True)
    source: str = _text()
    amount: int = _bigint()
    consumed: int = _bigint(default=0)
    granted_at: datetime = _ts()
    expires_at: datetime | None = _ts(nullable=True)
    # Position in the (subscription, meter) serialisation order (meter_balances.event_seq) when
    # the grant was issued: it covers only events written after it (seq > issued_seq).
    issued_seq: int = _bigint(default=0)
    created_at: datetime | None = _ts(now=True)


class MeterBalance(SQLModel, table=True):
    """One row per (subscription, meter) that has usage: the lock that serialises allocation,
    and the sequence that orders events for recomputation."""

    __tablename__ = "meter_balances"
    subscription_id: uuid.UUID = Field(
        sa_column=sa.Column(UUID(as_uuid=True), sa.ForeignKey("subscriptions.id"), primary_key=True)
    )
    usage_meter_id: uuid.UUID = Field(
        sa_column=sa.Column(UUID(as_uuid=True), sa.ForeignKey("usage_meters.id"), primary_key=True)
    )
    customer_id: uuid.UUID = _fk("customers.id")
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
    )
    subscription_id: uuid.UUID = Field(
        sa_column=sa.Column(UUID(as_uuid=True), sa.ForeignKey("subscriptions.id"), primary_key=True)
    )
    usage_meter_id: uuid.UUID = Field(
        sa_column=sa.Column(UUID(as_uuid=True), sa.ForeignKey("usage_meters.id"), primary_key=True)
    )
    period_start: datetime = Field(
        sa_column=sa.Column(sa.DateTime(timezone=True), primary_key=True)
    )
    price_id: uuid.UUID = Field(
        sa_column=sa.Column(UUID(as_uuid=True), sa.ForeignKey("prices.id"), primary_key=True)
    )
    customer_id: uuid.UUID = _fk("customers.id")
    period_end: datetime = _ts()
    used: int = _bigint(default=0)
    covered: int = _bigint(default=0)
    uncovered: int = _bigint(default=0)


class UsageDistinctKey(SQLModel, table=True):
    """Property sets already counted by a COUNT_DISTINCT_PROPERTIES meter in a period."""

    __tablename__ = "usage_distinct_keys"
    subscription_id: uuid.UUID = Field(
        sa_column=sa.Column(UUID(as_uuid=True), sa.ForeignKey("subscriptions.id"), primary_key=True)
    )
    usage_meter_id: uuid.UUID = Field(
        sa_column=sa.Column(UUID(as_uuid=True), sa.ForeignKey("usage_meters.id"), primary_key=True)
    )
    period_start: datetime = Field(
        sa_column=sa.Column(sa.DateTime(timezone=True), primary_key=True)
    )
    properties_hash: str = Field(sa_column=sa.Column(sa.Text, primary_key=True))
    customer_id: uuid.UUID = _fk("customers.id")


class UsageEvent(SQLModel, table=True):
    """Append-only. ``transaction_id`` is unique per (customer, meter): the idempotency key."""

    __tablename__ = "usage_events"
    __table_args__ = (
        sa.UniqueConstraint(
            "customer_id", "usage_meter_id", "transaction_id", name="usage_events_idempotency_key"
        ),
        sa.CheckConstraint("amount > 0", name="usage_events_amount_check"),
        sa.CheckConstraint(
            "consumed >= 0 AND covered >= 0 AND covered <= consumed",
            name="usage_events_allocation_check",
        ),
        sa.Index("usage_events_sequence_idx", "subscription_id", "usage_meter_id", "seq"),
        # Usage history (Billing.usageEvents): a customer's events by id, newest first.
        sa.Index("usage_events_customer_history_idx", "customer_id", "id"),
    )
    id: uuid.UUID = Field(sa_column=sa.Column(UUID(as_uuid=True), primary_key=True))
    customer_id: uuid.UUID = _fk("customers.id")
    subscription_id: uuid.UUID = _fk("subscriptions.id")
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


RESERVATION_STATUSES = ("held", "finalized", "released", "expired")


class UsageReservation(SQLModel, table=True):
    """A hold on a meter's balance (reserveUsage). ``held`` counts against availableBalance
    while ``expires_at`` lies ahead; a held row past it is freed on every read, and the sweep
    only rewrites it to ``expired``. The transactionId is the settling event's."""

    __tablename__ = "usage_reservations"
    __table_args__ = (
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
        # What the sweep walks: held rows by expiry.
        sa.Index(
            "usage_reservations_expiry_idx",
            "expires_at",
            postgresql_where=sa.text("status = 'held'"),
        ),
    )
    id: uuid.UUID = Field(sa_column=sa.Column(UUID(as_uuid=True), primary_key=True))
    customer_id: uuid.UUID = _fk("customers.id")
    subscription_id: uuid.UUID = _fk("subscriptions.id")
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


class ApiKey(SQLModel, table=True):
    """Secret API keys: only a SHA-256 hash of the key is stored."""

    __tablename__ = "api_keys"
    id: uuid.UUID | None = _id()
    name: str = _text()
    prefix: str = _text()
    key_hash: str = Field(sa_column=sa.Column(sa.Text, nullable=False, unique=True))
    created_at: datetime | None = _ts(now=True)
    revoked_at: datetime | None = _ts(nullable=True)


metadata = SQLModel.metadata
