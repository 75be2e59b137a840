"""voidUsageEvent: reverse an event of the current billing period (secret keys only).

One call of ``void_usage_event()`` decides and writes everything under the (subscription,
meter) lock, so that the stored state equals a world without the event: its grant takes come
back, the live events recorded after it on that meter are allocated again in their order
(credits it had taken now cover later usage that went uncovered), its usage and charge go, and
a distinct property set it paid for is paid by the next event that repeated it, or freed.
The event stays, marked voided, and keeps its transactionId: a retry of it is a replay,
never a new charge.
"""

from __future__ import annotations

import uuid
from typing import Any

from gateway.billing import owners, usage
from gateway.errors import UserError, invalid, not_found
from gateway.reservations.records import UsageEventVoided, balance_of
from gateway.settings import Settings
from gateway.storage.db import Database

MAX_REASON = 1000


async def void_usage_event(
    db: Database, settings: Settings, usage_event_id: str, reason: str | None
) -> UsageEventVoided | UserError:
    try:
        event_id = uuid.UUID(usage_event_id)
    except ValueError:
        return not_found(f"no usage event {usage_event_id}", "input", "usageEventId")
    if reason is not None and len(reason) > MAX_REASON:
        return invalid(f"reason must be at most {MAX_REASON} characters", "input", "reason")

    customer_id = await owners.event_owner(db, event_id)
    if customer_id is None:
        return not_found(f"no usage event {event_id}", "input", "usageEventId")

    async def call() -> Any:
        return await db.fetchval(
            "SELECT void_usage_event($1::uuid, $2::uuid, $3, $4)",
            customer_id,
            event_id,
            reason,
            settings.gateway_void_max_later_events,
        )

    data = await usage.with_retry(call)
    if data["status"] == "error":
        result = usage.usage_result(data)
        assert isinstance(result, UserError)
        return result
    return UsageEventVoided(
        event_data=data["event"],
        already_voided=data["status"] == "already_voided",
        balance=balance_of(data),
    )
