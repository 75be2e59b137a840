"""A pricing model in Flowglad's setup format (what ``PricingModel.definition`` returns).

The export is built from the in-memory catalog, so it needs no database access. It lists what
a definition would set up again: archived entries (removed by an update) and the no-charge
prices the gateway creates for every meter are left out; a product's price is its default
price. Setting the export up again gives an equal model (``tests/test_pricing_as_code.py``).
"""

from __future__ import annotations

import uuid
from typing import Any

import yaml

from gateway.billing.catalog import load_catalogs
from gateway.billing.records import Catalog, PriceRow
from gateway.errors import UserError, not_found
from gateway.storage.db import Database


def _without_none(mapping: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in mapping.items() if v is not None}


def _usage_price(p: PriceRow) -> dict[str, Any]:
    return _without_none(
        {
            "type": "usage",
            "slug": p.slug,
            "name": p.name,
            "unitPrice": p.unit_price,
            "currency": p.currency,
            "usageEventsPerUnit": p.usage_events_per_unit,
            "isDefault": p.is_default,
            "active": p.active,
            "intervalUnit": p.interval_unit,
            "intervalCount": p.interval_count,
        }
    )


def _product_price(p: PriceRow) -> dict[str, Any]:
    return _without_none(
        {
            "type": p.type,
            "slug": p.slug,
            "name": p.name,
            "unitPrice": p.unit_price,
            "currency": p.currency,
            "intervalUnit": p.interval_unit,
            "intervalCount": p.interval_count,
            "isDefault": True,
            "active": True,
        }
    )


def definition_of(catalog: Catalog) -> dict[str, Any]:
    """The model as a setup definition (a mapping ready to be dumped as YAML or JSON)."""
    meters = []
    for m in catalog.meters:
        prices = [
            _usage_price(p)
            for p in catalog.meter_prices(m.id)
            if not p.is_no_charge and not p.archived
        ]
        meters.append(
            {
                "usageMeter": {
                    "slug": m.slug,
                    "name": m.name,
                    "aggregationType": m.aggregation_type,
                },
                "prices": prices,
            }
        )
    features = []
    for f in catalog.features:
        if f.archived:
            continue
        feature: dict[str, Any] = {"type": f.type, "slug": f.slug, "name": f.name}
        if f.description is not None:
            feature["description"] = f.description
        if f.type == "usage_credit_grant" and f.usage_meter_id is not None:
            feature["usageMeterSlug"] = catalog.meter_by_id[f.usage_meter_id].slug
            feature["amount"] = f.amount
            feature["renewalFrequency"] = f.renewal_frequency
        feature["active"] = f.active
        features.append(feature)
    products = []
    for p in catalog.products:
        if p.archived:
            continue
        price = next(
            (x for x in catalog.product_prices(p.id) if x.is_default and not x.archived), None
        )
        if price is None:  # cannot be set up again without a price; not written by the gateway
            continue
        products.append(
            {
                "product": _without_none(
                    {
                        "slug": p.slug,
                        "name": p.name,
                        "description": p.description,
                        "active": p.active,
                        "default": p.is_default,
                    }
                ),
                "price": _product_price(price),
                "features": [f.slug for f in catalog.product_features(p.id) if not f.archived],
            }
        )
    return {
        "name": catalog.name,
        "isDefault": catalog.is_default,
        "usageMeters": meters,
        "features": features,
        "products": products,
    }


def export_definition(catalog: Catalog) -> str:
    """The model in Flowglad's setup format, as YAML."""
    return yaml.safe_dump(
        definition_of(catalog), sort_keys=False, allow_unicode=True, default_flow_style=False
    )


async def export_pricing_model(db: Database, pricing_model_id: str) -> str | UserError:
    """The stored model's definition (YAML), or NOT_FOUND."""
    try:
        pm_id = uuid.UUID(pricing_model_id)
    except ValueError:
        return not_found(f"no pricing model {pricing_model_id}", "pricingModelId")
    catalog = (await load_catalogs(db, [pm_id])).get(pm_id)
    if catalog is None:
        return not_found(f"no pricing model {pricing_model_id}", "pricingModelId")
    return export_definition(catalog)
