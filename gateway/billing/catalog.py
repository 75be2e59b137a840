"""Reading the catalog (pricing models with products, prices, meters and features).

The catalog is read on almost every request and changes rarely, so each process keeps
whole pricing models in memory. A change to the catalog sends ``NOTIFY gateway_catalog``
in the same transaction; every process LISTENs (``gateway.storage.listener.Listener``) and
drops its copy, and entries also expire after ``GATEWAY_CATALOG_CACHE_SECONDS`` as a bound
should a notification be lost. While the listener is disconnected the cache is bypassed
(notifications could be missed), and when it reconnects the cache is emptied.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Sequence

from gateway.billing.records import Catalog, FeatureRow, PriceRow, ProductRow, UsageMeterRow
from gateway.storage.db import Conn, Database
from gateway.storage.listener import Listening

NOTIFY_CHANNEL = "gateway_catalog"

_CATALOG_SQL = """
SELECT pm.id, pm.name, pm.is_default,
  coalesce((SELECT jsonb_agg(jsonb_build_object(
      'id', p.id, 'slug', p.slug, 'name', p.name, 'is_default', p.is_default,
      'description', p.description, 'active', p.active,
      'archived', p.archived_at IS NOT NULL,
      'feature_ids', coalesce((SELECT jsonb_agg(pf.feature_id ORDER BY f.id)
                                 FROM product_features pf JOIN features f ON f.id = pf.feature_id
                                WHERE pf.product_id = p.id), '[]'::jsonb))
      ORDER BY p.id) FROM products p WHERE p.pricing_model_id = pm.id), '[]') AS products,
  coalesce((SELECT jsonb_agg(to_jsonb(pr) ORDER BY pr.id)
              FROM prices pr WHERE pr.pricing_model_id = pm.id), '[]') AS prices,
  coalesce((SELECT jsonb_agg(to_jsonb(m) ORDER BY m.id)
              FROM usage_meters m WHERE m.pricing_model_id = pm.id), '[]') AS meters,
  coalesce((SELECT jsonb_agg(to_jsonb(f) ORDER BY f.id)
              FROM features f WHERE f.pricing_model_id = pm.id), '[]') AS features
FROM pricing_models pm
WHERE pm.id = ANY($1::uuid[])
"""


def _uuid(value: object) -> uuid.UUID | None:
    return uuid.UUID(str(value)) if value is not None else None


def _catalog_from_record(r: dict[str, object]) -> Catalog:
    pm_id = uuid.UUID(str(r["id"]))
    products = tuple(
        ProductRow(
            id=uuid.UUID(p["id"]),
            pricing_model_id=pm_id,
            slug=p["slug"],
            name=p["name"],
            is_default=p["is_default"],
            feature_ids=tuple(uuid.UUID(f) for f in p["feature_ids"]),
            description=p["description"],
            active=p["active"],
            archived=p["archived"],
        )
        for p in r["products"]  # type: ignore[attr-defined]
    )
    prices = tuple(
        PriceRow(
            id=uuid.UUID(p["id"]),
            pricing_model_id=pm_id,
            product_id=_uuid(p["product_id"]),
            usage_meter_id=_uuid(p["usage_meter_id"]),
            slug=p["slug"],
            name=p["name"],
            type=p["type"],
            unit_price=p["unit_price"],
            currency=p["currency"],
            interval_unit=p["interval_unit"],
            interval_count=p["interval_count"],
            usage_events_per_unit=p["usage_events_per_unit"],
            is_default=p["is_default"],
            is_no_charge=p["is_no_charge"],
            active=p["active"],
            archived=p["archived_at"] is not None,
        )
        for p in r["prices"]  # type: ignore[attr-defined]
    )
    meters = tuple(
        UsageMeterRow(
            id=uuid.UUID(m["id"]),
            pricing_model_id=pm_id,
            slug=m["slug"],
            name=m["name"],
            aggregation_type=m["aggregation_type"],
        )
        for m in r["meters"]  # type: ignore[attr-defined]
    )
    features = tuple(
        FeatureRow(
            id=uuid.UUID(f["id"]),
            pricing_model_id=pm_id,
            slug=f["slug"],
            name=f["name"],
            type=f["type"],
            amount=f["amount"],
            usage_meter_id=_uuid(f["usage_meter_id"]),
            renewal_frequency=f["renewal_frequency"],
            description=f["description"],
            active=f["active"],
            archived=f["archived_at"] is not None,
        )
        for f in r["features"]  # type: ignore[attr-defined]
    )
    return Catalog(
        id=pm_id,
        name=str(r["name"]),
        is_default=bool(r["is_default"]),
        products=products,
        prices=prices,
        meters=meters,
        features=features,
    )


async def load_catalogs(db: Database | Conn, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Catalog]:
    rows = await db.fetch(_CATALOG_SQL, list(ids))
    return {c.id: c for c in (_catalog_from_record(dict(r)) for r in rows)}


async def notify_catalog_changed(conn: Conn, pricing_model_id: uuid.UUID) -> None:
    """Tell every process to drop its copy (delivered when the transaction commits)."""
    await conn.execute("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, str(pricing_model_id))


class CatalogCache:
    """Whole pricing models kept per process; see the module docstring for invalidation."""

    def __init__(self, db: Database, ttl_seconds: float) -> None:
        self.db = db
        self.ttl = ttl_seconds
        self._entries: dict[uuid.UUID, tuple[float, Catalog]] = {}
        self._listener: Listening | None = None
        # Bumped by every invalidation: a load that was under way when one arrived may have
        # read the old catalog, so it is not kept.
        self._generation = 0

    def attach(self, listener: Listening) -> None:
        """Invalidate on ``listener``'s notifications; bypass the cache while it is down."""
        listener.on(NOTIFY_CHANNEL, self._on_notify)
        listener.on_reconnect(self.invalidate)
        self._listener = listener

    def _on_notify(self, payload: str) -> None:
        try:
            self.invalidate(uuid.UUID(payload))
        except ValueError:
            self.invalidate()

    def invalidate(self, pricing_model_id: uuid.UUID | None = None) -> None:
        self._generation += 1
        if pricing_model_id is None:
            self._entries.clear()
        else:
            self._entries.pop(pricing_model_id, None)

    async def get_many(self, ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, Catalog]:
        if self._listener is not None and not self._listener.connected:
            return await load_catalogs(self.db, list(ids))
        now = time.monotonic()
        found: dict[uuid.UUID, Catalog] = {}
        missing: list[uuid.UUID] = []
        for pm_id in ids:
            entry = self._entries.get(pm_id)
            if entry is not None and now - entry[0] < self.ttl:
                found[pm_id] = entry[1]
            else:
                missing.append(pm_id)
        if missing:
            generation = self._generation
            loaded = await load_catalogs(self.db, missing)
            if generation == self._generation:
                for pm_id, catalog in loaded.items():
                    self._entries[pm_id] = (now, catalog)
            found.update(loaded)
        return found
