"""Writing a pricing model from a definition in Flowglad's setup format.

``setup_pricing_model`` validates and plans the definition (``pricing_plan``) and writes it
in one transaction with one set-based statement per table, or nothing at all. Default pricing
model: the new model becomes the default when ``isDefault: true`` is given, or when no default
pricing model exists yet; making it the default clears the previous default first, under the
transaction-level advisory lock ``DEFAULT_PRICING_MODEL_LOCK`` (the partial unique index
``pricing_models_one_default`` allows one).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg
import uuid_utils

from gateway.billing.catalog import notify_catalog_changed
from gateway.billing.pricing_plan import (
    FeaturePlan,
    MeterPlan,
    Plan,
    ProductPricePlan,
    UsagePricePlan,
    parse_plan,
)
from gateway.errors import ErrorCode, UserError
from gateway.storage.db import Conn, Database

__all__ = ["DEFAULT_PRICING_MODEL_LOCK", "SetUp", "parse_plan", "setup_pricing_model"]

DEFAULT_PRICING_MODEL_LOCK = 0x6761_7465_7761_7901
"""Advisory lock key taken while deciding which pricing model is the default."""

# --- Writing --------------------------------------------------------------------------------


def new_id() -> uuid.UUID:
    return uuid.UUID(bytes=uuid_utils.uuid7().bytes)


_CLEAR_DEFAULT_SQL = "UPDATE pricing_models SET is_default = false WHERE is_default AND id <> $1"

_INSERT_PRICING_MODEL_SQL = """
INSERT INTO pricing_models (id, name, is_default)
SELECT $1, $2, $3 OR NOT EXISTS (SELECT 1 FROM pricing_models WHERE is_default)
"""

INSERT_METERS_SQL = """
INSERT INTO usage_meters (id, pricing_model_id, slug, name, aggregation_type)
SELECT m.id, $1, m.slug, m.name, m.aggregation_type
  FROM unnest($2::uuid[], $3::text[], $4::text[], $5::text[])
       AS m(id, slug, name, aggregation_type)
"""

INSERT_FEATURES_SQL = """
INSERT INTO features (id, pricing_model_id, slug, name, description, type, amount,
                      usage_meter_id, renewal_frequency, active)
SELECT f.id, $1, f.slug, f.name, f.description, f.type, f.amount, f.usage_meter_id,
       f.renewal_frequency, f.active
  FROM unnest($2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[],
              $8::uuid[], $9::text[], $10::boolean[])
       AS f(id, slug, name, description, type, amount, usage_meter_id, renewal_frequency,
            active)
"""

INSERT_PRODUCTS_SQL = """
INSERT INTO products (id, pricing_model_id, slug, name, description, is_default, active)
SELECT p.id, $1, p.slug, p.name, p.description, p.is_default, p.active
  FROM unnest($2::uuid[], $3::text[], $4::text[], $5::text[], $6::boolean[], $7::boolean[])
       AS p(id, slug, name, description, is_default, active)
"""

INSERT_PRICES_SQL = """
INSERT INTO prices (id, pricing_model_id, product_id, usage_meter_id, slug, name, type,
                    unit_price, currency, interval_unit, interval_count, usage_events_per_unit,
                    is_default, is_no_charge, active)
SELECT p.id, $1, p.product_id, p.usage_meter_id, p.slug, p.name, p.type, p.unit_price,
       p.currency, p.interval_unit, p.interval_count, p.usage_events_per_unit, p.is_default,
       p.is_no_charge, p.active
  FROM unnest($2::uuid[], $3::uuid[], $4::uuid[], $5::text[], $6::text[], $7::text[],
              $8::bigint[], $9::text[], $10::text[], $11::integer[], $12::integer[],
              $13::boolean[], $14::boolean[], $15::boolean[])
       AS p(id, product_id, usage_meter_id, slug, name, type, unit_price, currency,
            interval_unit, interval_count, usage_events_per_unit, is_default, is_no_charge,
            active)
"""

INSERT_PRODUCT_FEATURES_SQL = """
INSERT INTO product_features (product_id, feature_id)
SELECT * FROM unnest($1::uuid[], $2::uuid[])
ON CONFLICT DO NOTHING
"""

PriceRowTuple = tuple[Any, ...]
"""(id, product_id, usage_meter_id, slug, name, type, unit_price, currency, interval_unit,
interval_count, usage_events_per_unit, is_default, is_no_charge, active)"""


def columns(rows: list[tuple[Any, ...]], width: int) -> list[list[Any]]:
    """Rows to one list per column (the arrays passed to unnest)."""
    return [[row[i] for row in rows] for i in range(width)]


def no_charge_price(meter: MeterPlan, meter_id: uuid.UUID, is_default: bool) -> PriceRowTuple:
    return (
        new_id(),
        None,
        meter_id,
        meter.no_charge_slug,
        meter.no_charge_name,
        "usage",
        0,
        meter.no_charge_currency,
        None,
        None,
        1,
        is_default,
        True,
        True,
    )


def usage_price(p: UsagePricePlan, meter_id: uuid.UUID, *, is_default: bool) -> PriceRowTuple:
    return (
        new_id(),
        None,
        meter_id,
        p.slug,
        p.name,
        "usage",
        p.unit_price,
        p.currency,
        p.interval_unit,
        p.interval_count,
        p.usage_events_per_unit,
        is_default,
        False,
        p.active,
    )


def product_price(pp: ProductPricePlan, product_id: uuid.UUID) -> PriceRowTuple:
    return (
        new_id(),
        product_id,
        None,
        pp.slug,
        pp.name,
        pp.type,
        pp.unit_price,
        pp.currency,
        pp.interval_unit,
        pp.interval_count,
        None,
        True,
        False,
        True,
    )


def feature_row(
    f: FeaturePlan, feature_id: uuid.UUID, meter_ids: dict[str, uuid.UUID]
) -> tuple[Any, ...]:
    meter_id = meter_ids[f.usage_meter_slug] if f.usage_meter_slug is not None else None
    return (
        feature_id,
        f.slug,
        f.name,
        f.description,
        f.type,
        f.amount,
        meter_id,
        f.renewal_frequency,
        f.active,
    )


async def make_default(conn: Conn, pm_id: uuid.UUID) -> None:
    """Make ``pm_id`` the default pricing model (the caller holds the advisory lock)."""
    await conn.execute(_CLEAR_DEFAULT_SQL, pm_id)
    await conn.execute("UPDATE pricing_models SET is_default = true WHERE id = $1", pm_id)


async def _write(conn: Conn, d: Plan) -> uuid.UUID:
    pm_id = new_id()
    meter_ids = {m.slug: new_id() for m in d.meters}
    feature_ids = {f.slug: new_id() for f in d.features}
    product_ids = {p.slug: new_id() for p in d.products}

    await conn.execute("SELECT pg_advisory_xact_lock($1)", DEFAULT_PRICING_MODEL_LOCK)
    if d.is_default:
        await conn.execute(_CLEAR_DEFAULT_SQL, pm_id)
    await conn.execute(_INSERT_PRICING_MODEL_SQL, pm_id, d.name, d.is_default)

    if d.meters:
        meters = [(meter_ids[m.slug], m.slug, m.name, m.aggregation_type) for m in d.meters]
        await conn.execute(INSERT_METERS_SQL, pm_id, *columns(meters, 4))
    if d.products:
        products = [
            (product_ids[p.slug], p.slug, p.name, p.description, p.is_default, p.active)
            for p in d.products
        ]
        await conn.execute(INSERT_PRODUCTS_SQL, pm_id, *columns(products, 6))
    if d.features:
        features = [feature_row(f, feature_ids[f.slug], meter_ids) for f in d.features]
        await conn.execute(INSERT_FEATURES_SQL, pm_id, *columns(features, 9))

    prices: list[PriceRowTuple] = []
    for m in d.meters:
        meter_id = meter_ids[m.slug]
        prices.append(no_charge_price(m, meter_id, not m.has_default_price))
        prices.extend(usage_price(p, meter_id, is_default=p.is_default) for p in m.prices)
    prices.extend(product_price(p.price, product_ids[p.slug]) for p in d.products)
    if prices:
        await conn.execute(INSERT_PRICES_SQL, pm_id, *columns(prices, 14))

    links = [(product_ids[p.slug], feature_ids[s]) for p in d.products for s in p.feature_slugs]
    if links:
        await conn.execute(INSERT_PRODUCT_FEATURES_SQL, *columns(links, 2))

    await notify_catalog_changed(conn, pm_id)
    return pm_id


def invalid(problems: list[str]) -> UserError:
    message = f"the pricing model definition has {len(problems)} problem(s): " + "; ".join(problems)
    return UserError(
        ErrorCode.INVALID_INPUT, message, ["input", "definition"], extra={"problems": problems}
    )


def conflict(exc: asyncpg.IntegrityConstraintViolationError) -> UserError:
    """Validation should make this impossible; the transaction has been rolled back."""
    constraint = getattr(exc, "constraint_name", None)
    detail = getattr(exc, "detail", None) or str(exc)
    what = f" (constraint {constraint})" if constraint else ""
    return invalid([f"definition: conflicts with the database{what}: {detail}"])


@dataclass(frozen=True, slots=True)
class SetUp:
    pricing_model_id: uuid.UUID
    warnings: tuple[str, ...]


async def setup_pricing_model(db: Database, text: str) -> SetUp | UserError:
    """Validate ``text`` and write the pricing model in one transaction: its id and the
    warnings, or the problems as an INVALID_INPUT error (and nothing written)."""
    definition, problems = parse_plan(text)
    if definition is None:
        return invalid(problems)
    try:
        async with db.transaction() as conn:
            pm_id = await _write(conn, definition)
    except asyncpg.IntegrityConstraintViolationError as exc:
        return conflict(exc)
    return SetUp(pm_id, definition.warnings)
