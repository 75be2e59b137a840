"""The rules of a definition that span entries, and what it holds that is not modelled.

``cross_check`` applies Flowglad's rules and the gateway's over a validated definition (unique
slugs, references, defaults, reserved slugs); ``unmodelled_warnings`` lists what the gateway
accepts but does not store.
"""

from __future__ import annotations

import json
from collections.abc import Collection

from gateway.billing.pricing_format import (
    FREE_PRODUCT_SLUG,
    NO_CHARGE_SUFFIX,
    PricingModelSpec,
    ResourceFeature,
    UsageCreditGrantFeature,
)


def _quote(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def cross_check(spec: PricingModelSpec, raw_slugs: Collection[str] = ()) -> list[str]:
    """Rules that span entries: unique slugs, references, defaults (Flowglad's rules and the
    gateway's), in document order."""
    problems: list[str] = []

    def unique(kind: str, seen: dict[str, str], slug: str | None, path: str) -> None:
        if slug is None:
            return
        if slug in seen:
            problems.append(f"{path}: duplicate slug {_quote(slug)}")
        else:
            seen[slug] = path

    meters: dict[str, str] = {}
    prices: dict[str, str] = {}
    for i, entry in enumerate(spec.usage_meters):
        unique("usage meter", meters, entry.usage_meter.slug, f"usageMeters[{i}].usageMeter.slug")
        default_at: str | None = None
        for j, price in enumerate(entry.prices or []):
            at = f"usageMeters[{i}].prices[{j}]"
            if price.slug is not None and price.slug.endswith(NO_CHARGE_SUFFIX):
                problems.append(
                    f'{at}.slug: {_quote(price.slug)} must not end in "{NO_CHARGE_SUFFIX}": the'
                    " suffix is reserved for the no-charge price the gateway creates for every"
                    " usage meter"
                )
            else:
                unique("price", prices, price.slug, f"{at}.slug")
            if price.is_default and not price.active:
                problems.append(
                    f"{at}.isDefault: an inactive price cannot be the default;"
                    " set active: true or isDefault: false"
                )
            if price.is_default:
                if default_at is not None:
                    problems.append(
                        f"{at}.isDefault: a usage meter has at most one default price;"
                        f" {default_at} is already the default"
                    )
                default_at = default_at or at
    resources: dict[str, str] = {}
    for i, resource in enumerate(spec.resources or []):
        unique("resource", resources, resource.slug, f"resources[{i}].slug")
    features: dict[str, str] = {}
    for i, feature in enumerate(spec.features):
        unique("feature", features, feature.slug, f"features[{i}].slug")
        if (
            isinstance(feature, UsageCreditGrantFeature)
            and feature.usage_meter_slug not in meters
            and feature.usage_meter_slug not in raw_slugs
        ):
            problems.append(
                f"features[{i}].usageMeterSlug: unknown usage meter {_quote(feature.usage_meter_slug)}"
            )
        if (
            isinstance(feature, ResourceFeature)
            and feature.resource_slug not in resources
            and feature.resource_slug not in raw_slugs
        ):
            problems.append(
                f"features[{i}].resourceSlug: unknown resource {_quote(feature.resource_slug)}"
            )
    products: dict[str, str] = {}
    default_product: str | None = None
    for i, pentry in enumerate(spec.products):
        at = f"products[{i}]"
        product, pprice = pentry.product, pentry.price
        unique("product", products, product.slug, f"{at}.product.slug")
        if pprice.slug.endswith(NO_CHARGE_SUFFIX):
            problems.append(
                f'{at}.price.slug: {_quote(pprice.slug)} must not end in "{NO_CHARGE_SUFFIX}":'
                " the suffix is reserved for the no-charge price the gateway creates for every"
                " usage meter"
            )
        else:
            unique("price", prices, pprice.slug, f"{at}.price.slug")
        if not (pprice.active and pprice.is_default):
            problems.append(f"{at}.price: price must have active=true and isDefault=true")
        if product.slug == FREE_PRODUCT_SLUG and not product.default:
            problems.append(
                f"{at}.product.slug: slug {_quote(FREE_PRODUCT_SLUG)} is reserved for default"
                " products only"
            )
        if product.default:
            if default_product is not None:
                problems.append(
                    f"{at}.product.default: at most one product may be the default;"
                    f" {default_product} is already the default"
                )
            default_product = default_product or f"{at}.product"
            if pprice.unit_price != 0:
                problems.append(f"{at}.price.unitPrice: default products must have zero price")
            if pprice.trial_period_days:
                problems.append(f"{at}.price.trialPeriodDays: default products cannot have trials")
        listed: set[str] = set()
        for k, slug in enumerate(pentry.features):
            if slug in listed:
                problems.append(f"{at}.features[{k}]: duplicate feature {_quote(slug)}")
            elif slug not in features and slug not in raw_slugs:
                problems.append(f"{at}.features[{k}]: unknown feature {_quote(slug)}")
            listed.add(slug)
    if default_product is None and FREE_PRODUCT_SLUG in prices:
        problems.append(
            f"{prices[FREE_PRODUCT_SLUG]}: no product is the default, so the free default"
            f" product and its price {_quote(FREE_PRODUCT_SLUG)} are added; that price slug"
            " is taken"
        )
    return problems


def _ignored(path: str, what: str) -> str:
    return f"{path}: {what} is not modelled by the gateway; accepted and ignored"


def unmodelled_warnings(spec: PricingModelSpec) -> list[str]:
    """What the definition holds that the gateway accepts but does not store."""
    warnings: list[str] = []
    if spec.resources:
        warnings.append(_ignored("resources", f"{len(spec.resources)} resource(s)"))
    resource_features = set()
    for i, feature in enumerate(spec.features):
        if isinstance(feature, ResourceFeature):
            resource_features.add(feature.slug)
            warnings.append(_ignored(f"features[{i}]", "a resource feature"))
    for i, entry in enumerate(spec.products):
        at = f"products[{i}]"
        product = entry.product
        if product.image_url is not None:
            warnings.append(_ignored(f"{at}.product.imageURL", "a product image"))
        for key, value in (
            ("singularQuantityLabel", product.singular_quantity_label),
            ("pluralQuantityLabel", product.plural_quantity_label),
        ):
            if value is not None:
                warnings.append(_ignored(f"{at}.product.{key}", "a quantity label"))
        if entry.price.trial_period_days is not None:
            warnings.append(_ignored(f"{at}.price.trialPeriodDays", "a trial period"))
        if entry.display_group is not None:
            warnings.append(_ignored(f"{at}.displayGroup", "a display group"))
        if entry.display_order is not None:
            warnings.append(_ignored(f"{at}.displayOrder", "a display order"))
        for k, slug in enumerate(entry.features):
            if slug in resource_features:
                warnings.append(_ignored(f"{at}.features[{k}]", "a resource feature"))
    return warnings
