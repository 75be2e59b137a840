"""Recompute every balance from usage events and credit grants, and report drift.

This is an independent re-implementation of the allocation rules in Python: events of a
(subscription, meter) are replayed in the order they were serialised (``seq``), each consuming
``amount`` (or 1 for a new distinct property set of a COUNT_DISTINCT_PROPERTIES meter) from the
grants valid at its usageDate, soonest-expiring first and never-expiring last; what no grant
covers is overage of the event's period. A voided event (``voidUsageEvent``) is skipped: it
never happened. The result must equal, to the unit, what the write path stored: each grant's
``consumed``, each live event's consumed/covered split and grant takes, and the usage totals
per (period, price) that balances and charges read. Reservations move no credits (a hold only
lowers availableBalance while open), so they need no replay.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gateway.storage.db import Database


@dataclass(frozen=True)
class Drift:
    subscription_id: uuid.UUID
    usage_meter_id: uuid.UUID
    what: str
    expected: Any
    actual: Any

    def __str__(self) -> str:
        return (
            f"subscription {self.subscription_id} meter {self.usage_meter_id}: {self.what}"
            f" expected {self.expected}, stored {self.actual}"
        )


@dataclass
class _Grant:
    id: uuid.UUID
    amount: int
    consumed: int
    granted_at: datetime
    expires_at: datetime | None
    issued_seq: int
    remaining: int = 0

    def covers(self, moment: datetime, seq: int) -> bool:
        """Valid at the event's date, and issued before the event was written."""
        return (
            self.issued_seq < seq
            and self.granted_at <= moment
            and (self.expires_at is None or self.expires_at > moment)
        )


async def reconcile(db: Database, customer_ids: list[uuid.UUID] | None = None) -> list[Drift]:
    """Drift of every (subscription, meter) with usage or grants; [] when all is exact."""
    pairs = await db.fetch(
        """
        SELECT subscription_id, usage_meter_id FROM meter_balances
         WHERE $1::uuid[] IS NULL OR customer_id = ANY($1)
        UNION
        SELECT subscription_id, usage_meter_id FROM credit_grants
         WHERE $1::uuid[] IS NULL OR customer_id = ANY($1)
        ORDER BY 1, 2
        """,
        customer_ids,
    )
    drifts: list[Drift] = []
    for pair in pairs:
        drifts.extend(await _reconcile_pair(db, pair["subscription_id"], pair["usage_meter_id"]))
    return drifts


async def _reconcile_pair(db: Database, sub_id: uuid.UUID, meter_id: uuid.UUID) -> list[Drift]:
    meter = await db.fetchrow("SELECT aggregation_type FROM usage_meters WHERE id = $1", meter_id)
    assert meter is not None
    distinct = meter["aggregation_type"] == "count_distinct_properties"
    grants = [
        _Grant(
            id=r["id"],
            amount=r["amount"],
            consumed=r["consumed"],
            granted_at=r["granted_at"],
            expires_at=r["expires_at"],
            issued_seq=r["issued_seq"],
            remaining=r["amount"],
        )
        for r in await db.fetch(
            "SELECT id, amount, consumed, granted_at, expires_at, issued_seq FROM credit_grants"
            " WHERE subscription_id = $1 AND usage_meter_id = $2",
            sub_id,
            meter_id,
        )
    ]
    grants.sort(
        key=lambda g: (g.expires_at is None, g.expires_at or g.granted_at, g.granted_at, g.id.bytes)
    )
    events = await db.fetch(
        """
        SELECT id, seq, amount, consumed, covered, usage_date, period_start, price_id,
               md5(properties::text) AS properties_hash, take_grant_ids, take_amounts,
               voided_at
          FROM usage_events WHERE subscription_id = $1 AND usage_meter_id = $2 ORDER BY seq
        """,
        sub_id,
        meter_id,
    )
    drifts: list[Drift] = []

    def drift(what: str, expected: Any, actual: Any) -> None:
        drifts.append(Drift(sub_id, meter_id, what, expected, actual))

    keys: set[tuple[datetime, str]] = set()  # the distinct property sets taken
    totals: dict[tuple[datetime, uuid.UUID], list[int]] = defaultdict(lambda: [0, 0, 0])
    for e in events:
        if e["voided_at"] is not None:
            continue
        t = totals[(e["period_start"], e["price_id"])]
        key = (e["period_start"], e["properties_hash"])
        if distinct:
            consume = 0 if key in keys else 1
            keys.add(key)
        else:
            consume = e["amount"]
        left = consume
        takes: list[tuple[_Grant, int]] = []
        for g in grants:
            if left == 0:
                break
            if g.remaining > 0 and g.covers(e["usage_date"], e["seq"]):
                take = min(left, g.remaining)
                g.remaining -= take
                left -= take
                takes.append((g, take))
        covered = consume - left
        if (e["consumed"], e["covered"]) != (consume, covered):
            drift(
                f"event {e['id']} consumed/covered",
                (consume, covered),
                (e["consumed"], e["covered"]),
            )
        if e["take_grant_ids"] is not None:
            want = [(g.id, take) for g, take in takes]
            have = list(zip(e["take_grant_ids"], e["take_amounts"], strict=True))
            if want != have:
                drift(f"event {e['id']} grant takes", want, have)
        t[0] += consume
        t[1] += covered
        t[2] += left
    for g in grants:
        if g.amount - g.remaining != g.consumed:
            drift(f"grant {g.id} consumed", g.amount - g.remaining, g.consumed)
    stored = {
        (r["period_start"], r["price_id"]): [r["used"], r["covered"], r["uncovered"]]
        for r in await db.fetch(
            "SELECT period_start, price_id, used, covered, uncovered FROM usage_totals"
            " WHERE subscription_id = $1 AND usage_meter_id = $2",
            sub_id,
            meter_id,
        )
    }
    for key in sorted(set(stored) | set(totals), key=lambda k: (k[0], k[1].bytes)):
        expected = totals.get(key, [0, 0, 0])
        actual = stored.get(key, [0, 0, 0])
        if expected != actual:
            drift(
                f"usage totals of period {key[0].isoformat()} price {key[1]}"
                " (used, covered, uncovered)",
                tuple(expected),
                tuple(actual),
            )
    return drifts
