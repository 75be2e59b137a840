"""voidUsageEvent: reverse an event of the current billing period (secret keys only).

One call of ``void_usage_event()`` decides and writes everything under the (subscription,
meter) lock: the event's grant takes come back, its totals (and so its charge) go, a distinct
property set it alone paid for is freed. The event stays, marked voided, and keeps its
transactionId: a retry of it is a replay, never a new charge.
"""

from __future__ import annotations

import uuid

from gateway.billing import usage
from gateway.errors import UserError, invalid, not_found
from gateway.reservations.records import UsageEventVoided, balance_of
from gateway.storage.db import Database

MAX_REASON = 1000


async def void_usage_event(
    db: Database, usage_event_id: str, reason: str | None
) -> UsageEventVoided | UserError:
    try:
        event_id = uuid.UUID(usage_event_id)
    except ValueError:
        return not_found(f"no usage event {usage_event_id}", "input", "usageEventId")
    if reason is not None and len(reason) > MAX_REASON:
        return invalid(f"reason must be at most {MAX_REASON} characters", "input", "reason")
    data = await db.fetchval("SELECT void_usage_event($1::uuid, $2)", event_id, reason)
    if data["status"] == "error":
        result = usage.usage_result(data)
        assert isinstance(result, UserError)
        return result
    return UsageEventVoided(
        event_data=data["event"],
        already_voided=data["status"] == "already_voided",
        balance=balance_of(data),
    )
