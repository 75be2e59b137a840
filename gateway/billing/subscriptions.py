"""Subscriptions: start, cancel, and batched look-ups with their current billing period.

Billing periods are derived, never stored: ``billing_period()`` in the database computes the
period containing a moment from the start date and the price's interval, so a period that
has started is current without any job running.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import asyncpg

from gateway.billing import owners
from gateway.billing.catalog import CatalogCache
from gateway.billing.customers import customer_by_external_id
from gateway.billing.records import SubscriptionRow
from gateway.errors import UserError, invalid, not_found
from gateway.storage.db import Database

FUTURE_START_TOLERANCE = timedelta(minutes=5)

_SELECT = """
SELECT s.id, s.customer_id, c.pricing_model_id, s.price_id, s.product_id, s.status,
       s.start_date, s.interval_unit, s.interval_count, s.canceled_at, s.created_at,
       p.period_start, p.period_end
  FROM subscriptions s
  JOIN customers c ON c.id = s.customer_id
  CROSS JOIN LATERAL billing_period(s.start_date, s.interval_unit, s.interval_count, now()) p
"""


def _row(r: asyncpg.Record) -> SubscriptionRow:
    owners.remember_subscription(r["id"], r["customer_id"])  # a read teaches its owner
    return SubscriptionRow(**dict(r))


def parse_id(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except (ValueError, TypeError, AttributeError):
        return None


async def subscriptions_by_id(
    db: Database, ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, SubscriptionRow]:
    rows = await db.fetch(_SELECT + " WHERE s.id = ANY($1::uuid[])", list(ids))
    return {r["id"]: _row(r) for r in rows}


async def subscriptions_by_customer(
    db: Database, customer_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[SubscriptionRow]]:
    """Each customer's subscriptions, newest first."""
    rows = await db.fetch(
        _SELECT + " WHERE s.customer_id = ANY($1::uuid[]) ORDER BY s.created_at DESC, s.id DESC",
        list(customer_ids),
    )
    result: dict[uuid.UUID, list[SubscriptionRow]] = defaultdict(list)
    for r in rows:
        result[r["customer_id"]].append(_row(r))
    return result


async def create_subscription(
    db: Database,
    catalogs: CatalogCache,
    customer_external_id: str,
    price_slug: str,
    start_date: datetime | None,
) -> SubscriptionRow | UserError:
    """Start a subscription on a SUBSCRIPTION price; issues its one-time credit grants."""
    now = datetime.now(UTC)
    if start_date is not None:
        if start_date.tzinfo is None:
            start_date = start_date.replace(tzinfo=UTC)
        if start_date > now + FUTURE_START_TOLERANCE:
            return invalid("startDate must not lie in the future", "input", "startDate")
    customer = await customer_by_external_id(db, customer_external_id)
    if customer is None:
        return not_found(
            f"no customer with externalId {customer_external_id!r}", "input", "customerExternalId"
        )
    catalog = (await catalogs.get_many([customer.pricing_model_id]))[customer.pricing_model_id]
    price = catalog.price_by_slug.get(price_slug)
    if price is None:
        return not_found(
            f"no price {price_slug!r} in the customer's pricing model", "input", "priceSlug"
        )
    if price.type != "subscription" or price.product_id is None:
        return invalid(f"price {price_slug!r} is not a SUBSCRIPTION price", "input", "priceSlug")
    if not price.active:
        return invalid(f"price {price_slug!r} is archived", "input", "priceSlug")
    if not catalog.product_by_id[price.product_id].active:
        return invalid(f"price {price_slug!r} belongs to an inactive product", "input", "priceSlug")
    once_features = [
        f
        for f in catalog.product_features(price.product_id)
        if f.type == "usage_credit_grant" and f.renewal_frequency == "once"
    ]
    async with db.transaction() as conn:
        sub_id = await conn.fetchval(
            """
            INSERT INTO subscriptions (customer_id, price_id, product_id, status, start_date,
                                       interval_unit, interval_count)
            VALUES ($1, $2, $3, 'active', coalesce($4, now()), $5, $6)
            RETURNING id
            """,
            customer.id,
            price.id,
            price.product_id,
            start_date,
            price.interval_unit,
            price.interval_count,
        )
        if once_features:
            await conn.execute(
                """
                INSERT INTO credit_grants (customer_id, subscription_id, usage_meter_id,
                                           feature_id, source, amount, granted_at)
                SELECT s.customer_id, s.id, f.meter_id, f.feature_id, 'once', f.amount,
                       s.start_date
                  FROM subscriptions s,
                       unnest($2::uuid[], $3::uuid[], $4::bigint[]) AS f(feature_id, meter_id, amount)
                 WHERE s.customer_id = $5 AND s.id = $1
                """,
                sub_id,
                [f.id for f in once_features],
                [f.usage_meter_id for f in once_features],
                [f.amount for f in once_features],
                customer.id,
            )
    owners.remember_subscription(sub_id, customer.id)
    return (await subscriptions_by_id(db, [sub_id]))[sub_id]


async def cancel_subscription(db: Database, subscription_id: str) -> SubscriptionRow | UserError:
    """Cancel now. Cancelling a canceled subscription returns it unchanged."""
    sub_id = parse_id(subscription_id)
    customer_id = None if sub_id is None else await owners.subscription_owner(db, sub_id)
    if sub_id is not None and customer_id is not None:
        await db.execute(
            "UPDATE subscriptions SET status = 'canceled', canceled_at = now()"
            " WHERE customer_id = $2 AND id = $1 AND status <> 'canceled'",
            sub_id,
            customer_id,
        )
        found = await subscriptions_by_id(db, [sub_id])
        if sub_id in found:
            return found[sub_id]
    return not_found(f"no subscription {subscription_id}", "input", "subscriptionId")
