"""Tables of usage alerts and webhooks (the outbox and its deliveries).

Kept apart from ``models`` (which gathers the billing core) and registered on the same
SQLModel metadata: ``migrations/env.py`` imports this module, so Alembic compares them too.

- ``usage_alerts``: one threshold on one meter, for one customer or all customers of the
  meter's pricing model. Deleting one sets ``deleted_at`` (its events stay readable).
- ``usage_alert_events``: the outbox. A row is written by ``fire_usage_alerts()``
  (``storage/sql/alerts.sql``) in the transaction of the change that caused it; the unique
  key (alert, subscription, period, type) makes TRIGGERED and RESOLVED at most once each.
- ``webhook_endpoints``, ``webhook_deliveries`` (one per event and endpoint, claimed by the
  delivery workers) and ``webhook_attempts`` (every try: status, latency, error).

Distribution (gateway.storage.distribution): ``usage_alerts`` and ``webhook_endpoints`` are
the merchant's (reference tables: an alert may cover every customer of a pricing model, so
``usage_alerts.customer_id`` has no foreign key: a reference table cannot reference a
distributed one). The outbox and what hangs off it are a customer's rows, distributed by
customer: ``usage_alert_events``, ``webhook_deliveries`` and ``webhook_attempts`` carry
``customer_id`` first in every key and foreign key.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
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

ALERT_EVENT_TYPES = ("triggered", "resolved")
DELIVERY_STATUSES = ("pending", "delivered", "failed", "canceled")


class UsageAlert(SQLModel, table=True):
    __tablename__ = "usage_alerts"
    __table_args__ = (
        sa.CheckConstraint(
            "num_nonnulls(percent_used, used_above, available_below) = 1",
            name="usage_alerts_one_threshold_check",
        ),
        # The write path's "does this meter have an alert?" probe.
        sa.Index(
            "usage_alerts_meter_idx",
            "usage_meter_id",
            postgresql_where=sa.text("deleted_at IS NULL"),
        ),
    )
    id: uuid.UUID | None = _id()
    pricing_model_id: uuid.UUID = _fk("pricing_models.id")
    usage_meter_id: uuid.UUID = _fk("usage_meters.id")
    # NULL: every customer of the pricing model.
    customer_id: uuid.UUID | None = _uuid(nullable=True)
    percent_used: float | None = Field(
        default=None, sa_column=sa.Column(sa.Float(precision=53), nullable=True)
    )
    used_above: int | None = _bigint(nullable=True)
    available_below: int | None = _bigint(nullable=True)
    created_at: datetime | None = _ts(now=True)
    deleted_at: datetime | None = _ts(nullable=True)


class UsageAlertEvent(SQLModel, table=True):
    __tablename__ = "usage_alert_events"
    __table_args__ = (
        sa.CheckConstraint(_in("type", ALERT_EVENT_TYPES), name="usage_alert_events_type_check"),
        _key("id", table="usage_alert_events"),
        _subscription_fk("usage_alert_events"),
        sa.UniqueConstraint(
            "customer_id",
            "alert_id",
            "subscription_id",
            "period_start",
            "type",
            name="usage_alert_events_once_key",
        ),
        # The owner look-up by id alone (a webhook replay).
        sa.Index("usage_alert_events_id_idx", "id"),
    )
    customer_id: uuid.UUID = _owner()
    id: uuid.UUID | None = _owned_id()
    alert_id: uuid.UUID = _fk("usage_alerts.id")
    subscription_id: uuid.UUID = _uuid()
    usage_meter_id: uuid.UUID = _fk("usage_meters.id")
    period_start: datetime = _ts()
    type: str = _text()
    # The webhook body: {"type", "timestamp", "data": the UsageAlertEvent}.
    payload: dict[str, Any] = Field(sa_column=sa.Column(JSONB, nullable=False))
    occurred_at: datetime | None = _ts(now=True)


class WebhookEndpoint(SQLModel, table=True):
    __tablename__ = "webhook_endpoints"
    id: uuid.UUID | None = _id()
    url: str = _text()
    # The whsec_ signing secret (needed in clear to sign; shown to the merchant once).
    secret: str = _text()
    # Event types delivered; NULL: every type.
    event_types: list[str] | None = Field(
        default=None, sa_column=sa.Column(ARRAY(sa.Text), nullable=True)
    )
    created_at: datetime | None = _ts(now=True)
    deleted_at: datetime | None = _ts(nullable=True)


class WebhookDelivery(SQLModel, table=True):
    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        sa.CheckConstraint(
            _in("status", DELIVERY_STATUSES), name="webhook_deliveries_status_check"
        ),
        _key("id", table="webhook_deliveries"),
        sa.ForeignKeyConstraint(
            ["customer_id", "event_id"],
            ["usage_alert_events.customer_id", "usage_alert_events.id"],
            name="webhook_deliveries_event_fkey",
        ),
        sa.UniqueConstraint(
            "customer_id", "event_id", "endpoint_id", name="webhook_deliveries_event_endpoint_key"
        ),
        # What the workers claim, and the age of the oldest pending delivery.
        sa.Index(
            "webhook_deliveries_due_idx",
            "next_attempt_at",
            postgresql_where=sa.text("status = 'pending'"),
        ),
        sa.Index(
            "webhook_deliveries_pending_age_idx",
            "queued_at",
            postgresql_where=sa.text("status = 'pending'"),
        ),
        sa.Index("webhook_deliveries_endpoint_idx", "endpoint_id", "created_at"),
    )
    customer_id: uuid.UUID = _owner()
    id: uuid.UUID | None = _owned_id()
    event_id: uuid.UUID = _uuid()
    endpoint_id: uuid.UUID = _fk("webhook_endpoints.id")
    status: str = Field(
        default="pending",
        sa_column=sa.Column(sa.Text, nullable=False, server_default=sa.text("'pending'")),
    )
    attempts: int = Field(
        default=0, sa_column=sa.Column(sa.Integer, nullable=False, server_default=sa.text("0"))
    )
    # Due time; while a worker holds a claim, the end of its claim.
    next_attempt_at: datetime | None = _ts(now=True)
    # When it was (re)queued: retries stop a retry window after it.
    queued_at: datetime | None = _ts(now=True)
    delivered_at: datetime | None = _ts(nullable=True)
    last_status: int | None = _int(nullable=True)
    last_error: str | None = _text(nullable=True)
    created_at: datetime | None = _ts(now=True)


class WebhookAttempt(SQLModel, table=True):
    __tablename__ = "webhook_attempts"
    __table_args__ = (
        _key("id", table="webhook_attempts"),
        sa.ForeignKeyConstraint(
            ["customer_id", "delivery_id"],
            ["webhook_deliveries.customer_id", "webhook_deliveries.id"],
            name="webhook_attempts_delivery_fkey",
        ),
        sa.Index("webhook_attempts_delivery_idx", "delivery_id", "attempted_at"),
    )
    customer_id: uuid.UUID = _owner()
    id: uuid.UUID | None = _owned_id()
    delivery_id: uuid.UUID = _uuid()
    attempted_at: datetime | None = _ts(now=True)
    status_code: int | None = _int(nullable=True)
    latency_ms: float = Field(sa_column=sa.Column(sa.Float(precision=53), nullable=False))
    error: str | None = _text(nullable=True)
