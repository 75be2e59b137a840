"""What an update of a pricing model may not do: checked before anything is written.

Removing a usage meter (Flowglad's rule: usage refers to it), changing a meter's aggregation
type or a feature's type (both would change the meaning of what was recorded), and moving a
price slug from one meter or product to another. Used by ``gateway.billing.pricing_update``.
"""

from __future__ import annotations

from gateway.billing import pricing_plan as plan_
from gateway.billing.records import Catalog, PriceRow


def q(value: object) -> str:
    return f'"{value}"' if isinstance(value, str) else str(value)


def owner_of(catalog: Catalog, price: PriceRow) -> str:
    if price.usage_meter_id is not None:
        return f"usage meter {q(catalog.meter_by_id[price.usage_meter_id].slug)}"
    assert price.product_id is not None
    return f"product {q(catalog.product_by_id[price.product_id].slug)}"


def refusals(catalog: Catalog, plan: plan_.Plan) -> list[str]:
    """What the update may not do (see the module docstring)."""
    problems = []
    proposed_meters = {m.slug: m for m in plan.meters}
    for m in catalog.meters:
        new = proposed_meters.get(m.slug)
        if new is None:
            problems.append(
                f"usageMeters: usage meter {q(m.slug)} cannot be removed (usage refers to it)"
            )
        elif new.aggregation_type != m.aggregation_type:
            problems.append(
                f"usageMeters[{q(m.slug)}].aggregationType: cannot change from"
                f" {q(m.aggregation_type)} to {q(new.aggregation_type)}"
            )
    for f in plan.features:
        old_feature = catalog.feature_by_slug.get(f.slug)
        if old_feature is not None and old_feature.type != f.type:
            problems.append(
                f"features[{q(f.slug)}].type: cannot change from {q(old_feature.type)} to"
                f" {q(f.type)};"
                " give the feature a new slug"
            )
    owners = [(p.slug, f"usage meter {q(m.slug)}") for m in plan.meters for p in m.prices]
    owners += [(p.price.slug, f"product {q(p.slug)}") for p in plan.products]
    for slug, owner in owners:
        old = catalog.price_by_slug.get(slug)
        if old is not None and not old.archived and owner_of(catalog, old) != owner:
            problems.append(
                f"price {q(slug)}: cannot move from {owner_of(catalog, old)} to {owner};"
                " give the price a new slug"
            )
    return problems
