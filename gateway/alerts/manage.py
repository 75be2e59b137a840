"""Creating and deleting usage alerts (secret key only)."""

from __future__ import annotations

import math

from gateway.alerts.records import Threshold, UsageAlertRow
from gateway.billing.subscriptions import parse_id
from gateway.errors import UserError, invalid, not_found
from gateway.storage.db import Database

MAX_PERCENT = 1_000_000.0

# The customer by its id ($6, found through customer_external_ids first): on Citus a read of
# every customer's shard in the statement that writes usage_alerts (a reference table) is
# refused. The meter named by slug: in the customer's pricing model when one is named, otherwise in
# the default pricing model (or the only model that has such a meter).
_CREATE_SQL = """
WITH cust AS (
  SELECT id, pricing_model_id, external_id FROM customers WHERE id = $6 AND external_id = $2
), meter AS (
  SELECT m.id, m.pricing_model_id
    FROM usage_meters m JOIN pricing_models pm ON pm.id = m.pricing_model_id
   WHERE m.slug = $1
     AND ($2::text IS NULL OR m.pricing_model_id = (SELECT pricing_model_id FROM cust))
   ORDER BY pm.is_default DESC, pm.created_at, pm.id
   LIMIT 1
), made AS (
  INSERT INTO usage_alerts (pricing_model_id, usage_meter_id, customer_id, percent_used,
                            used_above, available_below)
  SELECT meter.pricing_model_id, meter.id, (SELECT id FROM cust), $3, $4, $5
    FROM meter
   WHERE $2::text IS NULL OR EXISTS (SELECT 1 FROM cust)
  RETURNING id, pricing_model_id, usage_meter_id, percent_used, used_above, available_below
)
SELECT EXISTS (SELECT 1 FROM cust) AS customer_found, made.*,
       (SELECT external_id FROM cust) AS customer_external_id
  FROM (SELECT 1) one LEFT JOIN made ON true
"""


def _threshold_problem(threshold: Threshold) -> UserError | None:
    given = [
        v
        for v in (threshold.percent_used, threshold.used_above, threshold.available_below)
        if v is not None
    ]
    if len(given) != 1:
        return invalid("give exactly one threshold", "input", "threshold")
    if threshold.percent_used is not None and not (
        math.isfinite(threshold.percent_used) and 0 < threshold.percent_used <= MAX_PERCENT
    ):
        return invalid(
            "percentUsed must be above 0 (and at most 1,000,000)",
            "input",
            "threshold",
            "percentUsed",
        )
    if threshold.used_above is not None and threshold.used_above < 0:
        return invalid("usedAbove must not be negative", "input", "threshold", "usedAbove")
    return None


async def create_usage_alert(
    db: Database, meter_slug: str, threshold: Threshold, customer_external_id: str | None
) -> UsageAlertRow | UserError:
    problem = _threshold_problem(threshold)
    if problem is not None:
        return problem
    customer_id = None
    if customer_external_id is not None:
        customer_id = await db.fetchval(
            "SELECT customer_id FROM customer_external_ids WHERE external_id = $1",
            customer_external_id,
        )
    row = await db.fetchrow(
        _CREATE_SQL,
        meter_slug,
        customer_external_id,
        threshold.percent_used,
        threshold.used_above,
        threshold.available_below,
        customer_id,
    )
    assert row is not None
    if customer_external_id is not None and not row["customer_found"]:
        return not_found(f"no customer {customer_external_id}", "input", "customerExternalId")
    if row["id"] is None:
        return not_found(f"no usage meter {meter_slug!r}", "input", "usageMeterSlug")
    return UsageAlertRow.of(row)


async def delete_usage_alert(db: Database, alert_id: str) -> str | UserError:
    """Stops evaluating the alert; its events (and their deliveries) stay."""
    parsed = parse_id(alert_id)
    deleted = None
    if parsed is not None:
        deleted = await db.fetchval(
            "UPDATE usage_alerts SET deleted_at = now()"
            " WHERE id = $1 AND deleted_at IS NULL RETURNING id",
            parsed,
        )
    if deleted is None:
        return not_found(f"no usage alert {alert_id}", "input", "alertId")
    return str(deleted)
