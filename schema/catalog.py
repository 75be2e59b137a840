"""Catalog types. They are views over one in-memory Catalog: no database access."""

from __future__ import annotations

import uuid
from enum import Enum

import strawberry

from gateway.billing.pricing_export import export_definition
from gateway.billing.records import Catalog, FeatureRow, PriceRow, ProductRow, UsageMeterRow


@strawberry.enum(description="What a price charges for.")
class PriceType(Enum):
    SUBSCRIPTION = strawberry.enum_value(
        "subscription", description="A recurring price of a product, every interval."
    )
    SINGLE_PAYMENT = strawberry.enum_value(
        "single_payment", description="A one-time price of a product."
    )
    USAGE = strawberry.enum_value(
        "usage", description="A price of a usage meter: overage is charged per unit of events."
    )


@strawberry.enum(description="What a feature gives the subscribers of its products.")
class FeatureType(Enum):
    TOGGLE = strawberry.enum_value(
        "toggle", description="On or off: checked with `Billing.featureAccess`."
    )
    USAGE_CREDIT_GRANT = strawberry.enum_value(
        "usage_credit_grant", description="Credits (`amount` events) on one usage meter."
    )


@strawberry.enum(description="When the credits of a usage credit grant are granted.")
class RenewalFrequency(Enum):
    ONCE = strawberry.enum_value(
        "once", description="Once, when the subscription starts; they do not expire."
    )
    EVERY_BILLING_PERIOD = strawberry.enum_value(
        "every_billing_period",
        description="At the start of every billing period; unused credits expire at its end.",
    )


@strawberry.enum(description="How a meter turns usage events into usage.")
class UsageMeterAggregationType(Enum):
    SUM = strawberry.enum_value("sum", description="The sum of the events' amounts.")
    COUNT_DISTINCT_PROPERTIES = strawberry.enum_value(
        "count_distinct_properties",
        description="The number of distinct `properties` values per billing period"
        " (e.g. unique users); a repeated value counts once.",
    )


@strawberry.enum(description="The unit of a price's billing interval.")
class IntervalUnit(Enum):
    DAY = strawberry.enum_value("day", description="Days.")
    WEEK = strawberry.enum_value("week", description="Weeks.")
    MONTH = strawberry.enum_value("month", description="Calendar months.")
    YEAR = strawberry.enum_value("year", description="Calendar years.")


def _meter(catalog: Catalog, meter_id: uuid.UUID | None) -> UsageMeter | None:
    return None if meter_id is None else UsageMeter.of(catalog.meter_by_id[meter_id], catalog)


@strawberry.type(
    description="A price of a product (subscription, single payment) or a usage meter."
)
class Price:
    id: strawberry.ID = strawberry.field(description="The price's id.")
    slug: str = strawberry.field(
        description="Unique within the pricing model; names the price in mutations."
    )
    name: str | None = strawberry.field(description="Display name; null when none was given.")
    type: PriceType = strawberry.field(description="What the price charges for.")
    unit_price: int = strawberry.field(description="Minor currency units (cents).")
    currency: str = strawberry.field(description="ISO 4217, e.g. USD.")
    usage_events_per_unit: int | None = strawberry.field(
        description="Usage prices only: events per charged unit."
    )
    is_default: bool = strawberry.field(
        description="The default price of its product, or of its meter for usage prices."
    )
    active: bool = strawberry.field(
        description="Can be subscribed to (or charged, for usage prices); false when archived."
    )
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


@strawberry.type(
    description="Something the customer's usage is counted on (API calls, generations)."
)
class UsageMeter:
    id: strawberry.ID = strawberry.field(description="The meter's id.")
    slug: str = strawberry.field(
        description="Unique within the pricing model; names the meter in usage events and queries."
    )
    name: str = strawberry.field(description="Display name.")
    aggregation_type: UsageMeterAggregationType = strawberry.field(
        description="How events become usage."
    )
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

    @strawberry.field(description="The meter's usage prices.")
    def prices(self) -> list[Price]:
        return [Price.of(p, self.catalog) for p in self.catalog.meter_prices(self.row.id)]

    @strawberry.field(description="The default usage price; {slug}_no_charge when none is set.")
    def default_price(self) -> Price:
        return Price.of(self.catalog.meter_default_price(self.row.id), self.catalog)


@strawberry.type(description="What a product gives: a toggle, or credits on a usage meter.")
class Feature:
    id: strawberry.ID = strawberry.field(description="The feature's id.")
    slug: str = strawberry.field(
        description="Unique within the pricing model; `Billing.featureAccess` takes it."
    )
    name: str = strawberry.field(description="Display name.")
    type: FeatureType = strawberry.field(description="Toggle or usage credit grant.")
    amount: int | None = strawberry.field(
        description="Credits granted, in events of the meter; null for toggles."
    )
    renewal_frequency: RenewalFrequency | None = strawberry.field(
        description="When the credits are granted; null for toggles."
    )
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

    @strawberry.field(description="The meter the credits are on; null for toggles.")
    def usage_meter(self) -> UsageMeter | None:
        return _meter(self.catalog, self.row.usage_meter_id)


@strawberry.type(description="A plan or add-on that customers subscribe to: prices and features.")
class Product:
    id: strawberry.ID = strawberry.field(description="The product's id.")
    slug: str = strawberry.field(description="Unique within the pricing model.")
    name: str = strawberry.field(description="Display name.")
    is_default: bool = strawberry.field(
        description="The product new customers start on (usually the free plan)."
    )
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

    @strawberry.field(description="The product's prices.")
    def prices(self) -> list[Price]:
        return [Price.of(p, self.catalog) for p in self.catalog.product_prices(self.row.id)]

    @strawberry.field(
        description="The default price, else the first; null when the product has no price."
    )
    def default_price(self) -> Price | None:
        price = self.catalog.product_default_price(self.row.id)
        return None if price is None else Price.of(price, self.catalog)

    @strawberry.field(description="The features subscribers of the product get.")
    def features(self) -> list[Feature]:
        return [Feature.of(f, self.catalog) for f in self.catalog.product_features(self.row.id)]


@strawberry.type(
    description="A pricing model: the products, prices, meters and features customers are"
    " billed by (Flowglad's model)."
)
class PricingModel:
    catalog: strawberry.Private[Catalog]

    @strawberry.field(description="The pricing model's id.")
    def id(self) -> strawberry.ID:
        return strawberry.ID(str(self.catalog.id))

    @strawberry.field(description="Display name.")
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

    @strawberry.field(description="Every product of the model.")
    def products(self) -> list[Product]:
        return [Product.of(p, self.catalog) for p in self.catalog.products]

    @strawberry.field(description="Every usage meter of the model.")
    def usage_meters(self) -> list[UsageMeter]:
        return [UsageMeter.of(m, self.catalog) for m in self.catalog.meters]

    @strawberry.field(description="Every feature of the model.")
    def features(self) -> list[Feature]:
        return [Feature.of(f, self.catalog) for f in self.catalog.features]
