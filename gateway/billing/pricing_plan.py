"""Planning a pricing model: a definition in Flowglad's setup format to the rows to store.

``plan`` turns a validated definition (``pricing_format``) into the rows the gateway stores,
applying Flowglad's rules on the way:

- a usage price without a slug (slugs are optional there) is named
  ``{meterSlug}_price_{n}`` (``n`` its position under the meter, made unique), and a warning
  says so;
- when no product is marked default, the free default product Flowglad adds is added: product
  and price slug ``free``, named ``Free Plan``, a monthly subscription at 0 (in the currency of
  the first product price, else USD);
- every meter gets the no-charge price ``{meterSlug}_no_charge`` named
  ``"{meter name} - No Charge"`` (usage, 0 per event, active), in the currency of the meter's
  default price, else its first price, else USD; it is the meter's default when no user price
  is;
- resource features are not stored, nor the links of products to them (warned).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.billing import pricing_format as fmt
from gateway.billing.pricing_read import parse
from gateway.billing.pricing_rules import unmodelled_warnings


@dataclass(frozen=True, slots=True)
class UsagePricePlan:
    slug: str
    name: str | None
    unit_price: int
    currency: str
    usage_events_per_unit: int
    is_default: bool
    active: bool
    interval_unit: str | None
    interval_count: int | None


@dataclass(frozen=True, slots=True)
class MeterPlan:
    slug: str
    name: str
    aggregation_type: str
    prices: tuple[UsagePricePlan, ...]

    @property
    def no_charge_slug(self) -> str:
        return self.slug + fmt.NO_CHARGE_SUFFIX

    @property
    def no_charge_name(self) -> str:
        return f"{self.name} - No Charge"

    @property
    def no_charge_currency(self) -> str:
        for price in self.prices:
            if price.is_default:
                return price.currency
        return self.prices[0].currency if self.prices else fmt.DEFAULT_CURRENCY

    @property
    def has_default_price(self) -> bool:
        return any(p.is_default for p in self.prices)


@dataclass(frozen=True, slots=True)
class FeaturePlan:
    slug: str
    type: str
    name: str
    description: str | None
    active: bool
    usage_meter_slug: str | None
    amount: int | None
    renewal_frequency: str | None


@dataclass(frozen=True, slots=True)
class ProductPricePlan:
    slug: str
    name: str | None
    type: str
    unit_price: int
    currency: str
    interval_unit: str | None
    interval_count: int | None


@dataclass(frozen=True, slots=True)
class ProductPlan:
    slug: str
    name: str
    description: str | None
    active: bool
    is_default: bool
    price: ProductPricePlan
    feature_slugs: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Plan:
    name: str
    is_default: bool
    """``isDefault: true`` was given; without it the model is the default only if none is."""
    meters: tuple[MeterPlan, ...]
    features: tuple[FeaturePlan, ...]
    products: tuple[ProductPlan, ...]
    warnings: tuple[str, ...] = field(default=())


def _usage_prices(
    i: int, entry: fmt.UsageMeterEntry, taken: set[str], warnings: list[str]
) -> tuple[UsagePricePlan, ...]:
    prices = []
    for j, p in enumerate(entry.prices or []):
        slug = p.slug
        if slug is None:
            base = f"{entry.usage_meter.slug}_price_{j + 1}"
            slug, n = base, 1
            while slug in taken:
                n += 1
                slug = f"{base}_{n}"
            warnings.append(
                f'usageMeters[{i}].prices[{j}].slug: absent; the gateway names the price "{slug}"'
            )
        taken.add(slug)
        prices.append(
            UsagePricePlan(
                slug=slug,
                name=p.name,
                unit_price=p.unit_price,
                currency=p.currency,
                usage_events_per_unit=p.usage_events_per_unit,
                is_default=p.is_default,
                active=p.active,
                interval_unit=p.interval_unit,
                interval_count=p.interval_count,
            )
        )
    return tuple(prices)


def _feature(f: fmt.ToggleFeature | fmt.UsageCreditGrantFeature) -> FeaturePlan:
    grant = f if isinstance(f, fmt.UsageCreditGrantFeature) else None
    return FeaturePlan(
        slug=f.slug,
        type=f.type,
        name=f.name,
        description=f.description,
        active=f.active,
        usage_meter_slug=grant.usage_meter_slug if grant else None,
        amount=grant.amount if grant else None,
        renewal_frequency=grant.renewal_frequency if grant else None,
    )


def _product(entry: fmt.ProductEntry, stored_features: set[str]) -> ProductPlan:
    p, price = entry.product, entry.price
    subscription = price if isinstance(price, fmt.SubscriptionPrice) else None
    return ProductPlan(
        slug=p.slug,
        name=p.name,
        description=p.description,
        active=p.active,
        is_default=p.default,
        price=ProductPricePlan(
            slug=price.slug,
            name=price.name,
            type=price.type,
            unit_price=price.unit_price,
            currency=price.currency,
            interval_unit=subscription.interval_unit if subscription else None,
            interval_count=subscription.interval_count if subscription else None,
        ),
        feature_slugs=tuple(s for s in entry.features if s in stored_features),
    )


def _free_product(currency: str) -> ProductPlan:
    return ProductPlan(
        slug=fmt.FREE_PRODUCT_SLUG,
        name=fmt.FREE_PRODUCT_NAME,
        description=None,
        active=True,
        is_default=True,
        price=ProductPricePlan(
            slug=fmt.FREE_PRODUCT_SLUG,
            name=fmt.FREE_PRODUCT_NAME,
            type="subscription",
            unit_price=0,
            currency=currency,
            interval_unit="month",
            interval_count=1,
        ),
        feature_slugs=(),
    )


def plan(spec: fmt.PricingModelSpec) -> Plan:
    """The rows to store for a validated definition (see the module docstring)."""
    warnings = unmodelled_warnings(spec)
    taken = {e.price.slug for e in spec.products}
    for entry in spec.usage_meters:
        taken.update(p.slug for p in entry.prices or [] if p.slug is not None)
    meters = tuple(
        MeterPlan(
            slug=e.usage_meter.slug,
            name=e.usage_meter.name,
            aggregation_type=e.usage_meter.aggregation_type,
            prices=_usage_prices(i, e, taken, warnings),
        )
        for i, e in enumerate(spec.usage_meters)
    )
    features = tuple(_feature(f) for f in spec.features if not isinstance(f, fmt.ResourceFeature))
    stored = {f.slug for f in features}
    products = [_product(e, stored) for e in spec.products]
    if not any(p.is_default for p in products):
        currency = products[0].price.currency if products else fmt.DEFAULT_CURRENCY
        products.append(_free_product(currency))
        warnings.append(
            'products: no product is the default; the free default product "free" is added'
        )
    return Plan(
        name=spec.name,
        is_default=spec.is_default,
        meters=meters,
        features=features,
        products=tuple(products),
        warnings=tuple(warnings),
    )


def parse_plan(text: str) -> tuple[Plan | None, list[str]]:
    spec, problems = parse(text)
    return (None, problems) if spec is None else (plan(spec), [])
