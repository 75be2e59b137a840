"""Catalog types. They are views over one in-memory Catalog: no database access."""

from __future__ import annotations

from enum import Enum

import strawberry

from gateway.records import Catalog, FeatureRow, PriceRow, ProductRow, UsageMeterRow


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


@strawberry.type
class Price:
    row: strawberry.Private[PriceRow]
    catalog: strawberry.Private[Catalog]

    @strawberry.field
    def id(self) -> strawberry.ID:
        return strawberry.ID(str(self.row.id))

    @strawberry.field
    def slug(self) -> str:
        return self.row.slug

    @strawberry.field
    def name(self) -> str | None:
        return self.row.name

    @strawberry.field
    def type(self) -> PriceType:
        return PriceType(self.row.type)

    @strawberry.field(description="Minor currency units (cents).")
    def unit_price(self) -> int:
        return self.row.unit_price

    @strawberry.field(description="ISO 4217, e.g. USD.")
    def currency(self) -> str:
        return self.row.currency

    @strawberry.field(description="Usage prices only: events per charged unit.")
    def usage_events_per_unit(self) -> int | None:
        return self.row.usage_events_per_unit

    @strawberry.field
    def is_default(self) -> bool:
        return self.row.is_default

    @strawberry.field
    def active(self) -> bool:
        return self.row.active

    @strawberry.field(description="Subscription prices only.")
    def interval_unit(self) -> IntervalUnit | None:
        return None if self.row.interval_unit is None else IntervalUnit(self.row.interval_unit)

    @strawberry.field(description="Subscription prices only.")
    def interval_count(self) -> int | None:
        return self.row.interval_count

    @strawberry.field(description="Usage prices only.")
    def usage_meter(self) -> UsageMeter | None:
        if self.row.usage_meter_id is None:
            return None
        return UsageMeter(
            row=self.catalog.meter_by_id[self.row.usage_meter_id], catalog=self.catalog
        )


@strawberry.type
class UsageMeter:
    row: strawberry.Private[UsageMeterRow]
    catalog: strawberry.Private[Catalog]

    @strawberry.field
    def id(self) -> strawberry.ID:
        return strawberry.ID(str(self.row.id))

    @strawberry.field
    def slug(self) -> str:
        return self.row.slug

    @strawberry.field
    def name(self) -> str:
        return self.row.name

    @strawberry.field
    def aggregation_type(self) -> UsageMeterAggregationType:
        return UsageMeterAggregationType(self.row.aggregation_type)

    @strawberry.field
    def prices(self) -> list[Price]:
        return [Price(row=p, catalog=self.catalog) for p in self.catalog.meter_prices(self.row.id)]

    @strawberry.field(description="The default usage price; {slug}_no_charge when none is set.")
    def default_price(self) -> Price:
        return Price(row=self.catalog.meter_default_price(self.row.id), catalog=self.catalog)


@strawberry.type
class Feature:
    row: strawberry.Private[FeatureRow]
    catalog: strawberry.Private[Catalog]

    @strawberry.field
    def id(self) -> strawberry.ID:
        return strawberry.ID(str(self.row.id))

    @strawberry.field
    def slug(self) -> str:
        return self.row.slug

    @strawberry.field
    def name(self) -> str:
        return self.row.name

    @strawberry.field
    def type(self) -> FeatureType:
        return FeatureType(self.row.type)

    @strawberry.field
    def amount(self) -> int | None:
        return self.row.amount

    @strawberry.field
    def usage_meter(self) -> UsageMeter | None:
        if self.row.usage_meter_id is None:
            return None
        return UsageMeter(
            row=self.catalog.meter_by_id[self.row.usage_meter_id], catalog=self.catalog
        )

    @strawberry.field
    def renewal_frequency(self) -> RenewalFrequency | None:
        if self.row.renewal_frequency is None:
            return None
        return RenewalFrequency(self.row.renewal_frequency)


@strawberry.type
class Product:
    row: strawberry.Private[ProductRow]
    catalog: strawberry.Private[Catalog]

    @strawberry.field
    def id(self) -> strawberry.ID:
        return strawberry.ID(str(self.row.id))

    @strawberry.field
    def slug(self) -> str:
        return self.row.slug

    @strawberry.field
    def name(self) -> str:
        return self.row.name

    @strawberry.field
    def is_default(self) -> bool:
        return self.row.is_default

    @strawberry.field
    def prices(self) -> list[Price]:
        return [
            Price(row=p, catalog=self.catalog) for p in self.catalog.product_prices(self.row.id)
        ]

    @strawberry.field
    def default_price(self) -> Price | None:
        price = self.catalog.product_default_price(self.row.id)
        return None if price is None else Price(row=price, catalog=self.catalog)

    @strawberry.field
    def features(self) -> list[Feature]:
        return [
            Feature(row=f, catalog=self.catalog) for f in self.catalog.product_features(self.row.id)
        ]


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

    @strawberry.field
    def products(self) -> list[Product]:
        return [Product(row=p, catalog=self.catalog) for p in self.catalog.products]

    @strawberry.field
    def usage_meters(self) -> list[UsageMeter]:
        return [UsageMeter(row=m, catalog=self.catalog) for m in self.catalog.meters]

    @strawberry.field
    def features(self) -> list[Feature]:
        return [Feature(row=f, catalog=self.catalog) for f in self.catalog.features]
