"""Customer tables: customers, their external ids, subscriptions and credit grants, and the
secret API keys.

Distributed by customer (gateway.storage.distribution): ``customers`` (its primary key ``id``
is the distribution column), ``subscriptions`` and ``credit_grants`` (primary keys
(customer_id, id)). ``customers.external_id`` is unique through ``customer_external_ids``,
a table of its own keyed by the external id: a unique constraint on ``customers`` would not
include the distribution column. ``api_keys`` belong to the merchant.
"""

from __future__ import annotations

import uuid
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from gateway.storage.columns import (
    _bigint,
    _fk,
    _id,
    _in,
    _int,
    _key,
    _owned_id,
    _owner,
    _subscription_fk,
    _text,
    _ts,
    _uuid,
)

CURRENT_STATUSES = ("trialing", "active", "past_due", "unpaid", "cancellation_scheduled")
SUBSCRIPTION_STATUSES = (
    *CURRENT_STATUSES,
    "incomplete",
    "incomplete_expired",
    "canceled",
    "paused",
)


class Customer(SQLModel, table=True):
    __tablename__ = "customers"
    id: uuid.UUID | None = _id()
    pricing_model_id: uuid.UUID = _fk("pricing_models.id")
    # Unique through customer_external_ids (written in the same transaction); indexed for
    # the reads that are not on a hot path (they go to every shard when distributed).
    external_id: str = Field(sa_column=sa.Column(sa.Text, nullable=False, index=True))
    name: str | None = _text(nullable=True)
    email: str | None = _text(nullable=True)
    created_at: datetime | None = _ts(now=True)
    # revokeCustomerSessions: session tokens issued before this instant are refused.
    sessions_revoked_before: datetime | None = _ts(nullable=True)


class CustomerExternalId(SQLModel, table=True):
    """The merchant's id of a customer -> the customer: globally unique, and distributed by
    ``external_id`` itself (its own distribution column, not co-located with the customers).
    No foreign key to ``customers``: a distributed table can only reference a co-located
    one. ``create_customer`` writes both rows in one transaction, this one first."""

    __tablename__ = "customer_external_ids"
    external_id: str = Field(sa_column=sa.Column(sa.Text, primary_key=True))
    customer_id: uuid.UUID = _uuid()


class Subscription(SQLModel, table=True):
    __tablename__ = "subscriptions"
    __table_args__ = (
        _key("id", table="subscriptions"),
        sa.CheckConstraint(_in("status", SUBSCRIPTION_STATUSES), name="subscriptions_status_check"),
        sa.Index("subscriptions_customer_idx", "customer_id", "created_at"),
        # The owner look-up by id alone (gateway.billing.owners).
        sa.Index("subscriptions_id_idx", "id"),
    )
    customer_id: uuid.UUID = _owner()
    id: uuid.UUID | None = _owned_id()
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
        _key("id", table="credit_grants"),
        _subscription_fk("credit_grants"),
        sa.UniqueConstraint(
            "customer_id",
            "subscription_id",
            "feature_id",
            "granted_at",
            name="credit_grants_issue_key",
        ),
        sa.Index("credit_grants_balance_idx", "subscription_id", "usage_meter_id", "expires_at"),
    )
    customer_id: uuid.UUID = _owner()
    id: uuid.UUID | None = _owned_id()
    subscription_id: uuid.UUID = _uuid()
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


class ApiKey(SQLModel, table=True):
    """Secret API keys: only a SHA-256 hash of the key is stored."""

    __tablename__ = "api_keys"
    id: uuid.UUID | None = _id()
    name: str = _text()
    prefix: str = _text()
    key_hash: str = Field(sa_column=sa.Column(sa.Text, nullable=False, unique=True))
    created_at: datetime | None = _ts(now=True)
    revoked_at: datetime | None = _ts(nullable=True)
