"""Applying an edited definition to an existing pricing model, by slug, in one transaction.

Rules (``docs/billing.md``, "Updating a pricing model"):

- what is new is added; names, descriptions, flags (``active``, ``isDefault``, ``default``)
  and the interval of usage prices are updated in place;
- what the definition no longer lists is archived, never deleted: prices, products and
  features get ``archived_at`` and ``active = false`` (usage events and grants refer to
  them); a product's prices are archived with it; links of products to features follow the
  definition (an archived product or feature keeps none); an archived entry listed again is
  restored;
- what recorded usage was charged at is never rewritten: a usage price whose ``unitPrice``,
  ``usageEventsPerUnit`` or ``currency`` changes becomes a NEW price under the same slug, and
  the old one is archived under ``{slug}@{id}`` (recorded events keep pointing at it). The same
  holds for a product's price (type, amount, currency, interval). The new price takes over as
  default when the definition says so;
- refused (InvalidInput, nothing written): removing a usage meter, changing a meter's
  aggregation type or a feature's type (both would change the meaning of what was recorded),
  and moving a price slug from one meter or product to another.

``changes`` lists what was done, one line per change; a dry run computes the same list in the
same transaction and rolls it back, so it writes nothing.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import asyncpg

from gateway.billing import pricing_plan as plan_
from gateway.billing import pricing_setup as setup
from gateway.billing.catalog import load_catalogs, notify_catalog_changed
from gateway.billing.pricing_refusals import q as _q
from gateway.billing.pricing_refusals import refusals
from gateway.billing.records import Catalog, PriceRow
from gateway.errors import UserError, not_found
from gateway.storage.db import Conn, Database

_ARCHIVE_PRICE_SQL = """
UPDATE prices SET active = false, is_default = false, archived_at = now(),
       slug = CASE WHEN $2 THEN slug || '@' || id::text ELSE slug END
 WHERE id = $1
"""


@dataclass(frozen=True, slots=True)
class Updated:
    pricing_model_id: uuid.UUID
    changes: tuple[str, ...]
    warnings: tuple[str, ...]
    dry_run: bool


class _Rollback(Exception):
    def __init__(self, result: Updated | UserError) -> None:
        self.result = result


class _Applier:
    def __init__(self, conn: Conn, catalog: Catalog, plan: plan_.Plan) -> None:
        self.conn = conn
        self.cat = catalog
        self.plan = plan
        self.pm_id = catalog.id
        self.changes: list[str] = []
        self.meter_ids = {m.slug: m.id for m in catalog.meters}
        self.feature_ids = {f.slug: f.id for f in catalog.features}
        self.archived_features: set[uuid.UUID] = set()

    def note(self, change: str) -> None:
        self.changes.append(change)

    async def insert_prices(self, rows: list[setup.PriceRowTuple]) -> None:
        if rows:
            await self.conn.execute(setup.INSERT_PRICES_SQL, self.pm_id, *setup.columns(rows, 14))

    async def free_slug(self, slug: str) -> None:
        """Rename an archived price that still holds ``slug`` (it keeps its id and usage)."""
        old = self.cat.price_by_slug.get(slug)
        if old is not None and old.archived:
            await self.conn.execute(
                "UPDATE prices SET slug = slug || '@' || id::text WHERE id = $1", old.id
            )

    async def archive_price(self, price: PriceRow, *, rename: bool) -> None:
        await self.conn.execute(_ARCHIVE_PRICE_SQL, price.id, rename)

    async def model(self) -> None:
        if self.plan.name != self.cat.name:
            await self.conn.execute(
                "UPDATE pricing_models SET name = $2 WHERE id = $1", self.pm_id, self.plan.name
            )
            self.note(f"pricing model: name {_q(self.cat.name)} -> {_q(self.plan.name)}")
        if self.plan.is_default and not self.cat.is_default:
            await setup.make_default(self.conn, self.pm_id)
            self.note("pricing model: now the default pricing model")

    async def meters(self) -> None:
        for m in self.plan.meters:
            meter_id = self.meter_ids.get(m.slug)
            if meter_id is None:
                meter_id = self.meter_ids[m.slug] = setup.new_id()
                await self.conn.execute(
                    setup.INSERT_METERS_SQL,
                    self.pm_id,
                    [meter_id],
                    [m.slug],
                    [m.name],
                    [m.aggregation_type],
                )
                rows = [setup.no_charge_price(m, meter_id, not m.has_default_price)]
                for p in m.prices:
                    await self.free_slug(p.slug)
                    rows.append(setup.usage_price(p, meter_id, is_default=p.is_default))
                await self.insert_prices(rows)
                self.note(f"usage meter {_q(m.slug)}: added with {len(m.prices)} price(s)")
                continue
            old_meter = self.cat.meter_by_id[meter_id]
            if old_meter.name != m.name:
                await self.conn.execute(
                    "UPDATE usage_meters SET name = $2 WHERE id = $1", meter_id, m.name
                )
                await self.conn.execute(
                    "UPDATE prices SET name = $2 WHERE usage_meter_id = $1 AND is_no_charge",
                    meter_id,
                    m.no_charge_name,
                )
                self.note(f"usage meter {_q(m.slug)}: name {_q(old_meter.name)} -> {_q(m.name)}")
            await self.meter_prices(m, meter_id)

    async def meter_prices(self, m: plan_.MeterPlan, meter_id: uuid.UUID) -> None:
        existing = [p for p in self.cat.meter_prices(meter_id) if not p.archived]
        old_default = next(p.slug for p in existing if p.is_default)
        current = {p.slug: p for p in existing if not p.is_no_charge}
        await self.conn.execute(
            "UPDATE prices SET is_default = false WHERE usage_meter_id = $1 AND is_default",
            meter_id,
        )
        proposed = {p.slug for p in m.prices}
        for slug, gone in current.items():
            if slug not in proposed:
                await self.archive_price(gone, rename=False)
                self.note(f"price {_q(slug)}: archived (usage meter {_q(m.slug)})")
        rows: list[setup.PriceRowTuple] = []
        for p in m.prices:
            old = current.get(p.slug)
            if old is None:
                await self.free_slug(p.slug)
                rows.append(setup.usage_price(p, meter_id, is_default=False))
                self.note(f"price {_q(p.slug)}: added (usage meter {_q(m.slug)})")
                continue
            charged = [
                f"{key} {_q(before)} -> {_q(after)}"
                for key, before, after in (
                    ("unitPrice", old.unit_price, p.unit_price),
                    ("usageEventsPerUnit", old.usage_events_per_unit, p.usage_events_per_unit),
                    ("currency", old.currency, p.currency),
                )
                if before != after
            ]
            if charged:
                await self.archive_price(old, rename=True)
                rows.append(setup.usage_price(p, meter_id, is_default=False))
                self.note(
                    f"price {_q(p.slug)}: {', '.join(charged)}: a new price replaces it; the old"
                    f' one is archived as "{p.slug}@{old.id}" and keeps the usage recorded at it'
                )
                continue
            updates = {
                k: v
                for k, v, before in (
                    ("name", p.name, old.name),
                    ("active", p.active, old.active),
                    ("interval_unit", p.interval_unit, old.interval_unit),
                    ("interval_count", p.interval_count, old.interval_count),
                )
                if v != before
            }
            if updates:
                await self.conn.execute(
                    "UPDATE prices SET name = $2, active = $3, interval_unit = $4,"
                    " interval_count = $5 WHERE id = $1",
                    old.id,
                    p.name,
                    p.active,
                    p.interval_unit,
                    p.interval_count,
                )
                self.note(f"price {_q(p.slug)}: {', '.join(sorted(updates))} updated")
        await self.insert_prices(rows)
        new_default = next((p.slug for p in m.prices if p.is_default), m.no_charge_slug)
        await self.conn.execute(
            "UPDATE prices SET is_default = true WHERE pricing_model_id = $1 AND slug = $2",
            self.pm_id,
            new_default,
        )
        if new_default != old_default:
            self.note(f"usage meter {_q(m.slug)}: default price {_q(new_default)}")

    async def features(self) -> None:
        proposed = {f.slug for f in self.plan.features}
        for gone in self.cat.features:
            if gone.slug not in proposed and not gone.archived:
                await self.conn.execute(
                    "UPDATE features SET active = false, archived_at = now() WHERE id = $1", gone.id
                )
                await self.conn.execute(
                    "DELETE FROM product_features WHERE feature_id = $1", gone.id
                )
                self.archived_features.add(gone.id)
                self.note(f"feature {_q(gone.slug)}: archived")
        for f in self.plan.features:
            row = setup.feature_row(
                f, self.feature_ids.get(f.slug) or setup.new_id(), self.meter_ids
            )
            old = self.cat.feature_by_slug.get(f.slug)
            if old is None:
                self.feature_ids[f.slug] = row[0]
                await self.conn.execute(
                    setup.INSERT_FEATURES_SQL, self.pm_id, *setup.columns([row], 9)
                )
                self.note(f"feature {_q(f.slug)}: added")
                continue
            before = (
                old.name,
                old.description,
                old.amount,
                old.usage_meter_id,
                old.renewal_frequency,
                old.active,
                old.archived,
            )
            after = (f.name, f.description, f.amount, row[6], f.renewal_frequency, f.active, False)
            if before != after:
                await self.conn.execute(
                    "UPDATE features SET name = $2, description = $3, amount = $4,"
                    " usage_meter_id = $5, renewal_frequency = $6, active = $7,"
                    " archived_at = NULL WHERE id = $1",
                    old.id,
                    *after[:6],
                )
                self.note(f"feature {_q(f.slug)}: {'restored' if old.archived else 'updated'}")

    async def products(self) -> None:
        proposed = {p.slug for p in self.plan.products}
        by_slug = {p.slug: p for p in self.cat.products}
        for gone in self.cat.products:
            if gone.slug not in proposed and not gone.archived:
                await self.conn.execute(
                    "UPDATE products SET active = false, is_default = false, archived_at = now()"
                    " WHERE id = $1",
                    gone.id,
                )
                await self.conn.execute(
                    "DELETE FROM product_features WHERE product_id = $1", gone.id
                )
                for price in self.cat.product_prices(gone.id):
                    if not price.archived:
                        await self.archive_price(price, rename=False)
                self.note(f"product {_q(gone.slug)}: archived with its price(s)")
        for p in self.plan.products:
            old = by_slug.get(p.slug)
            if old is None:
                product_id = setup.new_id()
                await self.conn.execute(
                    setup.INSERT_PRODUCTS_SQL,
                    self.pm_id,
                    *setup.columns(
                        [(product_id, p.slug, p.name, p.description, p.is_default, p.active)], 6
                    ),
                )
                await self.free_slug(p.price.slug)
                await self.insert_prices([setup.product_price(p.price, product_id)])
                self.note(f"product {_q(p.slug)}: added")
            else:
                product_id = old.id
                before = (old.name, old.description, old.is_default, old.active, old.archived)
                if before != (p.name, p.description, p.is_default, p.active, False):
                    await self.conn.execute(
                        "UPDATE products SET name = $2, description = $3, is_default = $4,"
                        " active = $5, archived_at = NULL WHERE id = $1",
                        old.id,
                        p.name,
                        p.description,
                        p.is_default,
                        p.active,
                    )
                    self.note(f"product {_q(p.slug)}: {'restored' if old.archived else 'updated'}")
                await self.product_price(p, product_id)
            await self.links(p, product_id, old.feature_ids if old else ())

    async def product_price(self, p: plan_.ProductPlan, product_id: uuid.UUID) -> None:
        pp = p.price
        old = next(
            (x for x in self.cat.product_prices(product_id) if x.is_default and not x.archived),
            None,
        )
        same = old is not None and (
            old.slug,
            old.type,
            old.unit_price,
            old.currency,
            old.interval_unit,
            old.interval_count,
        ) == (pp.slug, pp.type, pp.unit_price, pp.currency, pp.interval_unit, pp.interval_count)
        if old is not None and same:
            if old.name != pp.name:
                await self.conn.execute(
                    "UPDATE prices SET name = $2 WHERE id = $1", old.id, pp.name
                )
                self.note(f"price {_q(pp.slug)}: name updated")
            return
        if old is not None:
            await self.archive_price(old, rename=old.slug == pp.slug)
        await self.free_slug(pp.slug)
        await self.insert_prices([setup.product_price(pp, product_id)])
        replaced = f"; price {_q(old.slug)} archived" if old is not None else ""
        self.note(f"product {_q(p.slug)}: new price {_q(pp.slug)}{replaced}")

    async def links(
        self, p: plan_.ProductPlan, product_id: uuid.UUID, current: tuple[uuid.UUID, ...]
    ) -> None:
        wanted = {self.feature_ids[s] for s in p.feature_slugs}
        have = set(current) - self.archived_features
        removed, added = have - wanted, wanted - have
        if removed:
            await self.conn.execute(
                "DELETE FROM product_features WHERE product_id = $1 AND feature_id = ANY($2)",
                product_id,
                list(removed),
            )
        if added:
            await self.conn.execute(
                setup.INSERT_PRODUCT_FEATURES_SQL, [product_id] * len(added), list(added)
            )
        if added or removed:
            slug_of = {v: k for k, v in self.feature_ids.items()}
            parts = [f"+{slug_of[f]}" for f in sorted(added)] + [
                f"-{slug_of[f]}" for f in sorted(removed)
            ]
            self.note(f"product {_q(p.slug)}: features {' '.join(sorted(parts))}")


async def _apply(
    conn: Conn, pm_id: uuid.UUID, plan: plan_.Plan, dry_run: bool
) -> Updated | UserError:
    await conn.execute("SELECT pg_advisory_xact_lock($1)", setup.DEFAULT_PRICING_MODEL_LOCK)
    if await conn.fetchval("SELECT 1 FROM pricing_models WHERE id = $1 FOR UPDATE", pm_id) is None:
        return not_found(f"no pricing model {pm_id}", "input", "pricingModelId")
    catalog = (await load_catalogs(conn, [pm_id]))[pm_id]
    problems = refusals(catalog, plan)
    if problems:
        return setup.invalid(problems)
    applier = _Applier(conn, catalog, plan)
    await applier.model()
    await applier.meters()
    await applier.features()
    await applier.products()
    result = Updated(pm_id, tuple(applier.changes), plan.warnings, dry_run)
    if dry_run:
        raise _Rollback(result)
    if applier.changes:
        await notify_catalog_changed(conn, pm_id)
    return result


async def update_pricing_model(
    db: Database, pricing_model_id: str, text: str, *, dry_run: bool = False
) -> Updated | UserError:
    """Apply ``text`` to the pricing model (see the module docstring)."""
    try:
        pm_id = uuid.UUID(pricing_model_id)
    except ValueError:
        return not_found(f"no pricing model {pricing_model_id}", "input", "pricingModelId")
    plan, problems = plan_.parse_plan(text)
    if plan is None:
        return setup.invalid(problems)
    try:
        async with db.transaction() as conn:
            result = await _apply(conn, pm_id, plan, dry_run)
            if isinstance(result, UserError):
                raise _Rollback(result)
            return result
    except _Rollback as rollback:
        return rollback.result
    except asyncpg.IntegrityConstraintViolationError as exc:
        return setup.conflict(exc)
