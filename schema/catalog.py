"""Catalog types. They are views over one in-memory Catalog: no database access."""

from __future__ import annotations

import uuid
from enum import Enum

import strawberry

from gateway.billing.pricing_export import export_definition
from gateway.billing.records import Catalog, FeatureRow, PriceRow, ProductRow, UsageMeterRow


@strawberry.enum
class PriceType(Enum):
    SUBSCRIPTION = "subscription"
    SINGLE_PAYMENT = "single_payment"
    USAGE = "usage"


@strawberry.enum
class FeatureType(Enum):
    TOGGLE = "toggle"
    USAGE_CREDIT_GRANT = "usage_credit_grant"


@strawberry.enum
class RenewalFrequency(Enum):
    ONCE = "once"
    EVERY_BILLING_PERIOD = "every_billing_period"


@strawberry.enum
class UsageMeterAggregationType(Enum):
    SUM = "sum"
    COUNT_DISTINCT_PROPERTIES = "count_distinct_properties"


@strawberry.enum
class IntervalUnit(Enum):
    DAY = "day"
    WEEK = "week"
    MONTH = "month"
    YEAR = "year"


def _meter(catalog: Catalog, meter_id: uuid.UUID | None) -> UsageMeter | None:
    return None if meter_id is None else UsageMeter.of(catalog.meter_by_id[meter_id], catalog)


@strawberry.type
class Price:
    id: strawberry.ID
    slug: str
    name: str | None
    type: PriceType
    unit_price: int = strawberry.field(description="Minor currency units (cents).")
    currency: str = strawberry.field(description="ISO 4217, e.g. USD.")
    usage_events_per_unit: int | None = strawberry.field(
        description="Usage prices only: events per charged unit."
    )
    is_default: bool
    active: bool
    interval_unit: IntervalUnit | None = strawberry.field(description="Subscription prices only.")
    interval_count: int | None = strawberry.field(description="Subscription prices only.")
    row: strawberry.Private[PriceRow]
    catalog: strawberry.Private[Catalog]

    @classmethod
    def of(cls, row: PriceRow, catalog: Catalog) -> Price:
        return cls(
            id=strawberry.ID(str(row.id)),
            slug=row.slug,
            name=row.name,
            type=PriceType(row.type),
            unit_price=row.unit_price,
            currency=row.currency,
            usage_events_per_unit=row.usage_events_per_unit,
            is_default=row.is_default,
            active=row.active,
            interval_unit=None if row.interval_unit is None else IntervalUnit(row.interval_unit),
            interval_count=row.interval_count,
            row=row,
            catalog=catalog,
        )

    @strawberry.field(description="Usage prices only.")
    def usage_meter(self) -> UsageMeter | None:
        return _meter(self.catalog, self.row.usage_meter_id)


@strawberry.type
class UsageMeter:
    id: strawberry.ID
    slug: str
    name: str
    aggregation_type: UsageMeterAggregationType
    row: strawberry.Private[UsageMeterRow]
    catalog: strawberry.Private[Catalog]

    @classmethod
    def of(cls, row: UsageMeterRow, catalog: Catalog) -> UsageMeter:
        return cls(
            id=strawberry.ID(str(row.id)),
            slug=row.slug,
            name=row.name,
            aggregation_type=UsageMeterAggregationType(row.aggregation_type),
            row=row,
            catalog=catalog,
        )

    @strawberry.field
    def prices(self) -> list[Price]:
        return [Price.of(p, self.catalog) for p in self.catalog.meter_prices(self.row.id)]

    @strawberry.field(description="The default usage price; {slug}_no_charge when none is set.")
    def default_price(self) -> Price:
        return Price.of(self.catalog.meter_default_price(self.row.id), self.catalog)


@strawberry.type
class Feature:
    id: strawberry.ID
    slug: str
    name: str
    type: FeatureType
    amount: int | None
    renewal_frequency: RenewalFrequency | None
    row: strawberry.Private[FeatureRow]
    catalog: strawberry.Private[Catalog]

    @classmethod
    def of(cls, row: FeatureRow, catalog: Catalog) -> Feature:
        renewal = row.renewal_frequency
        return cls(
            id=strawberry.ID(str(row.id)),
            slug=row.slug,
            name=row.name,
            type=FeatureType(row.type),
            amount=row.amount,
            renewal_frequency=None if renewal is None else RenewalFrequency(renewal),
            row=row,
            catalog=catalog,
        )

    @strawberry.field
    def usage_meter(self) -> UsageMeter | None:
        return _meter(self.catalog, self.row.usage_meter_id)


@strawberry.type
class Product:
    id: strawberry.ID
    slug: str
    name: str
    is_default: bool
    row: strawberry.Private[ProductRow]
    catalog: strawberry.Private[Catalog]

    @classmethod
    def of(cls, row: ProductRow, catalog: Catalog) -> Product:
        return cls(
            id=strawberry.ID(str(row.id)),
            slug=row.slug,
            name=row.name,
            is_default=row.is_default,
            row=row,
            catalog=catalog,
        )

    @strawberry.field
    def prices(self) -> list[Price]:
        return [Price.of(p, self.catalog) for p in self.catalog.product_prices(self.row.id)]

    @strawberry.field
    def default_price(self) -> Price | None:
        price = self.catalog.product_default_price(self.row.id)
        return None if price is None else Price.of(price, self.catalog)

    @strawberry.field
    def features(self) -> list[Feature]:
        return [Feature.of(f, self.catalog) for f in self.catalog.product_features(self.row.id)]


@strawberry.type
class PricingModel:
    catalog: strawberry.Private[Catalog]

    @strawberry.field
    def id(self) -> strawberry.ID:
        return strawberry.ID(str(self.catalog.id))

    @strawberry.field
    def name(self) -> str:
        return self.catalog.name

    @strawberry.field(description="New customers are created on the default pricing model.")
    def is_default(self) -> bool:
        return self.catalog.is_default

    @strawberry.field(
        description="The model in Flowglad's setup format (YAML); setupPricingModel of it"
        " rebuilds an equal model."
    )
    def definition(self) -> str:
        return export_definition(self.catalog)

    @strawberry.field
    def products(self) -> list[Product]:
        return [Product.of(p, self.catalog) for p in self.catalog.products]

    @strawberry.field
    def usage_meters(self) -> list[UsageMeter]:
        return [UsageMeter.of(m, self.catalog) for m in self.catalog.meters]

    @strawberry.field
    def features(self) -> list[Feature]:
        return [Feature.of(f, self.catalog) for f in self.catalog.features]
