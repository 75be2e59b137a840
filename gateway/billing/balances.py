"""Balances, manual credit grants and current-period charges.

The balance design (see docs/billing.md): credit grants carry a ``consumed`` counter that
usage moves at write time (soonest-expiring first), and ``usage_totals`` keeps used, covered
and uncovered usage per (subscription, meter, billing period, price). A balance read touches
only the subscription's grants and one period's totals, never the usage history. The
database function ``usage_balance()`` is the single definition of a balance.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from gateway.billing import owners
from gateway.billing.records import BalanceRow, ChargeRow
from gateway.billing.subscriptions import parse_id
from gateway.errors import UserError, invalid, not_found
from gateway.storage.db import Database

BalanceKey = tuple[uuid.UUID, uuid.UUID]  # (subscription id, usage meter id)

# usage_balance() per key, and no customer's table joined in: a function that reads a
# customer's rows is not called inside a statement that reads them (on Citus that would be
# a distributed query inside a shard's). Each call touches one customer's rows.
_BALANCES_SQL = """
SELECT b.subscription_id, b.usage_meter_id, b.pricing_model_id, b.available_balance,
       b.used_balance, b.balance_limit, b.period_start, b.period_end, b.reserved_balance
  FROM unnest($1::uuid[], $2::uuid[], $3::uuid[]) AS k(customer_id, subscription_id, meter_id)
  CROSS JOIN LATERAL usage_balance(k.customer_id, k.subscription_id, k.meter_id, now()) b
"""


# A manual grant takes the (subscription, meter) lock usage events take. $5 is the
# subscription's customer (gateway.billing.owners).
_GRANT_SQL = """
WITH target AS (
  SELECT s.id AS subscription_id, s.customer_id, m.id AS meter_id
    FROM subscriptions s
    JOIN customers c ON c.id = $5
    LEFT JOIN usage_meters m ON m.pricing_model_id = c.pricing_model_id AND m.slug = $2
   WHERE s.customer_id = $5 AND s.id = $1
), locked AS (
  -- Take the (subscription, meter) lock usage events take, and a place in their order:
  -- the grant covers the events written after it.
  INSERT INTO meter_balances AS mb (customer_id, subscription_id, usage_meter_id,
                                    event_seq)
  SELECT customer_id, subscription_id, meter_id, 1 FROM target WHERE meter_id IS NOT NULL
  ON CONFLICT (customer_id, subscription_id, usage_meter_id)
  DO UPDATE SET event_seq = mb.event_seq + 1
  RETURNING mb.event_seq
), granted AS (
  INSERT INTO credit_grants (customer_id, subscription_id, usage_meter_id, source,
                             amount, granted_at, expires_at, issued_seq)
  SELECT customer_id, subscription_id, meter_id, 'manual', $3, now(), $4,
         (SELECT event_seq FROM locked)
    FROM target WHERE meter_id IS NOT NULL
  RETURNING id
)
SELECT t.subscription_id, t.meter_id, (SELECT count(*) FROM granted) AS granted
  FROM target t
"""

# Alerts on the balance after a change (gateway/storage/sql/alerts.sql), in its transaction.
ALERTS_HOOK_SQL = """
SELECT evaluate_usage_alerts($3, $1, $2,
                             (SELECT to_jsonb(b) FROM usage_balance($3, $1, $2, now()) b))
"""


def balance_from_json(
    data: dict[str, Any],
    pricing_model_id: uuid.UUID,
    parse_id: Callable[[str], uuid.UUID] = uuid.UUID,
) -> BalanceRow:
    """A balance as returned inside record_usage_event()'s JSON result."""
    return BalanceRow(
        subscription_id=parse_id(data["subscription_id"]),
        usage_meter_id=parse_id(data["usage_meter_id"]),
        pricing_model_id=pricing_model_id,
        available_balance=int(data["available_balance"]),
        used_balance=int(data["used_balance"]),
        balance_limit=None if data["balance_limit"] is None else int(data["balance_limit"]),
        period_start=datetime.fromisoformat(data["period_start"]),
        period_end=datetime.fromisoformat(data["period_end"]),
        reserved_balance=int(data.get("reserved_balance") or 0),
    )


async def balances(db: Database, keys: Sequence[BalanceKey]) -> dict[BalanceKey, BalanceRow]:
    """Balances of many (subscription, meter) pairs in one round trip; absent pairs have none."""
    if not keys:
        return {}
    found = await owners.subscription_owners(db, {k[0] for k in keys})
    keys = [k for k in keys if k[0] in found]
    if not keys:
        return {}
    rows = await db.fetch(
        _BALANCES_SQL, [found[k[0]] for k in keys], [k[0] for k in keys], [k[1] for k in keys]
    )
    return {(r["subscription_id"], r["usage_meter_id"]): BalanceRow(**dict(r)) for r in rows}


async def grant_usage_credits(
    db: Database,
    subscription_id: str,
    meter_slug: str,
    amount: int,
    expires_at: datetime | None,
) -> BalanceRow | UserError:
    """A manual grant, available from now until ``expires_at`` (or forever)."""
    sub_id = parse_id(subscription_id)
    if sub_id is None:
        return not_found(f"no subscription {subscription_id}", "input", "subscriptionId")
    if amount <= 0:
        return invalid("amount must be a positive integer", "input", "amount")
    if expires_at is not None:
        if expires_at.tzinfo is None:
            expires_at = expires_at.replace(tzinfo=UTC)
        if expires_at <= datetime.now(UTC):
            return invalid("expiresAt must lie in the future", "input", "expiresAt")
    customer_id = await owners.subscription_owner(db, sub_id)
    if customer_id is None:
        return not_found(f"no subscription {subscription_id}", "input", "subscriptionId")
    async with db.transaction() as conn:
        row = await conn.fetchrow(_GRANT_SQL, sub_id, meter_slug, amount, expires_at, customer_id)
        if row is not None and row["meter_id"] is not None:
            await conn.execute(ALERTS_HOOK_SQL, sub_id, row["meter_id"], customer_id)  # alerts hook
    if row is None:
        return not_found(f"no subscription {subscription_id}", "input", "subscriptionId")
    if row["meter_id"] is None:
        return not_found(
            f"no usage meter {meter_slug!r} in the customer's pricing model",
            "input",
            "usageMeterSlug",
        )
    found = await balances(db, [(sub_id, row["meter_id"])])
    return found[(sub_id, row["meter_id"])]


async def current_charges(
    db: Database, subscription_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[ChargeRow]]:
    """Overage of each subscription's current billing period, per usage price.

    Units are rounded up per price per period: ceil(uncovered events / usageEventsPerUnit),
    and the amount is units x unitPrice in the price's minor currency units.
    """
    rows = await db.fetch(
        """
        SELECT t.subscription_id, t.price_id, t.usage_meter_id, t.uncovered AS uncovered_events,
               ((t.uncovered + pr.usage_events_per_unit - 1) / pr.usage_events_per_unit) AS units,
               ((t.uncovered + pr.usage_events_per_unit - 1) / pr.usage_events_per_unit)
                 * pr.unit_price AS amount,
               pr.currency
          FROM subscriptions s
          CROSS JOIN LATERAL billing_period(s.start_date, s.interval_unit, s.interval_count, now()) p
          JOIN usage_totals t ON t.customer_id = s.customer_id AND t.subscription_id = s.id
                             AND t.period_start = p.period_start
          JOIN prices pr ON pr.id = t.price_id
         WHERE s.id = ANY($1::uuid[]) AND t.uncovered > 0
         ORDER BY t.subscription_id, pr.slug
        """,
        list(subscription_ids),
    )
    result: dict[uuid.UUID, list[ChargeRow]] = {sid: [] for sid in subscription_ids}
    for r in rows:
        result[r["subscription_id"]].append(ChargeRow(**dict(r)))
    return result
