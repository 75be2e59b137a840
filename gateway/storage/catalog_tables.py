"""Catalog tables: pricing models, usage meters, products, prices and features."""

from __future__ import annotations

import uuid
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import UUID
from sqlmodel import Field, SQLModel

from gateway.storage.columns import (
    _bigint,
    _bool,
    _fk,
    _id,
    _in,
    _int,
    _text,
    _ts,
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
