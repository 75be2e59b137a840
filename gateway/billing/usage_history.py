"""Usage history: a customer's recorded usage events, newest first, a page at a time.

The order is the events' ids, descending: UUIDv7, so time-ordered to the millisecond (events
of the same millisecond in a fixed but arbitrary order). Pages are keyset slices
(``gateway.billing.paging``) read through the index ``usage_events_customer_history_idx`` on
(customer_id, id): a page costs an index range scan from its cursor, whatever its depth.
The meter and subscription filters are applied during that scan; a subscription that is not
the customer's matches nothing (the customer is always part of the key), which is the access
rule of ``usageBalances``.

Many histories (a dashboard of 100 customers) are read in one statement: each key is one row
of an ``unnest`` joined LATERALly to its own index scan. ``totalCount`` is a separate batched
count, only run when a client asks for it: it reads every matching index entry, so it grows
with the history, which a page never does.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gateway.billing.paging import HIGHEST_ID, LOWEST_ID, PageRequest
from gateway.storage.db import Database


@dataclass(frozen=True, slots=True)
class UsageEventRow:
    id: uuid.UUID
    customer_id: uuid.UUID
    subscription_id: uuid.UUID
    usage_meter_id: uuid.UUID
    price_id: uuid.UUID
    billing_period_id: uuid.UUID | None
    amount: int
    transaction_id: str
    usage_date: datetime
    properties: Any
    created_at: datetime


@dataclass(frozen=True, slots=True)
class HistoryFilter:
    """Whose history, optionally narrowed to one meter and one subscription."""

    customer_id: uuid.UUID
    usage_meter_id: uuid.UUID | None
    subscription_id: uuid.UUID | None


HistoryKey = tuple[HistoryFilter, PageRequest]

_EVENT_COLUMNS = """e.id, e.customer_id, e.subscription_id, e.usage_meter_id, e.price_id,
           e.billing_period_id, e.amount, e.transaction_id, e.usage_date, e.properties,
           e.created_at"""
_MATCHES = """e.customer_id = k.customer_id
       AND (k.meter_id IS NULL OR e.usage_meter_id = k.meter_id)
       AND (k.subscription_id IS NULL OR e.subscription_id = k.subscription_id)"""

# Forward pages walk the index downwards from the cursor (newest first), backward pages
# upwards; the one not asked for is switched off by its constant condition on k.forward.
# The index is the primary key (customer_id, id).
_PAGES_SQL = f"""
SELECT k.ord, e.*
  FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::bool[], $5::uuid[], $6::int[])
       WITH ORDINALITY AS k(customer_id, meter_id, subscription_id, forward, bound, size, ord)
  CROSS JOIN LATERAL (
    (SELECT {_EVENT_COLUMNS} FROM usage_events e
      WHERE k.forward AND {_MATCHES} AND e.id < k.bound
      ORDER BY e.id DESC LIMIT k.size)
    UNION ALL
    (SELECT {_EVENT_COLUMNS} FROM usage_events e
      WHERE NOT k.forward AND {_MATCHES} AND e.id > k.bound
      ORDER BY e.id ASC LIMIT k.size)
  ) e
"""

_COUNTS_SQL = f"""
SELECT k.ord, (SELECT count(*) FROM usage_events e WHERE {_MATCHES}) AS total
  FROM unnest($1::uuid[], $2::uuid[], $3::uuid[])
       WITH ORDINALITY AS k(customer_id, meter_id, subscription_id, ord)
"""


def _event(record: Any) -> UsageEventRow:
    data = dict(record)
    data.pop("ord")
    return UsageEventRow(**data)


async def usage_event_pages(
    db: Database, keys: Sequence[HistoryKey]
) -> dict[HistoryKey, list[UsageEventRow]]:
    """For each key, up to size + 1 events from its cursor in paging order (what
    ``paging.page_of`` takes), all in one round trip."""
    if not keys:
        return {}
    rows = await db.fetch(
        _PAGES_SQL,
        [f.customer_id for f, _ in keys],
        [f.usage_meter_id for f, _ in keys],
        [f.subscription_id for f, _ in keys],
        [p.forward for _, p in keys],
        [p.cursor or (HIGHEST_ID if p.forward else LOWEST_ID) for _, p in keys],
        [p.size + 1 for _, p in keys],
    )
    pages: dict[HistoryKey, list[UsageEventRow]] = {key: [] for key in keys}
    for row in rows:
        pages[keys[row["ord"] - 1]].append(_event(row))
    for (_, request), events in pages.items():  # paging order, not left to the plan
        events.sort(key=lambda e: e.id, reverse=request.forward)
    return pages


async def usage_event_counts(
    db: Database, filters: Sequence[HistoryFilter]
) -> dict[HistoryFilter, int]:
    """How many events match each filter, in one round trip."""
    if not filters:
        return {}
    rows = await db.fetch(
        _COUNTS_SQL,
        [f.customer_id for f in filters],
        [f.usage_meter_id for f in filters],
        [f.subscription_id for f in filters],
    )
    return {filters[row["ord"] - 1]: int(row["total"]) for row in rows}
