"""Deliveries in the database: claim, record an attempt, retry schedule, replay.

A worker claims due deliveries with ``FOR UPDATE SKIP LOCKED`` and, in the same short
statement, moves their due time past the end of its claim (the send timeout plus a margin):
no other process takes them while it sends, and if this process dies the claim lapses and
another process sends them (delivery is at least once; ``webhook-id`` lets the receiver
drop a repeat). Every attempt is recorded with the delivery's new state in one statement.

The claim goes customer by customer: one read (no locks) finds the customers with due
deliveries, soonest first, then one claim statement per customer takes theirs. Citus takes
row locks only in a statement of one customer (its shard); on one PostgreSQL it costs a round
trip per customer with due deliveries, and an idle poll is still one round trip.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from gateway.storage.db import Database
from gateway.webhooks.sending import Outcome


def claim_seconds(timeout: float) -> float:
    """How long a claim holds: past the send's timeout (which bounds the whole exchange),
    with room to record the attempt."""
    return 2 * timeout + 5


@dataclass(frozen=True, slots=True)
class Claimed:
    customer_id: uuid.UUID  # whose event: the delivery's rows are the customer's
    id: uuid.UUID
    attempt: int
    queued_at: datetime
    event_id: uuid.UUID
    body: str
    url: str
    secret: str


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    base_seconds: float
    max_seconds: float
    window: timedelta

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Seconds until the next try after failed attempt ``attempt`` (1-based):
        base x 2^(attempt-1), capped, with jitter (half to all of it)."""
        full = min(self.max_seconds, self.base_seconds * 2 ** min(attempt - 1, 30))
        return float(full / 2 + rng.random() * full / 2)


_DUE_CUSTOMERS_SQL = """
SELECT customer_id FROM webhook_deliveries
 WHERE status = 'pending' AND next_attempt_at <= now()
 GROUP BY customer_id ORDER BY min(next_attempt_at) LIMIT $1
"""

_CLAIM_SQL = """
WITH due AS (
  SELECT d.customer_id, d.id FROM webhook_deliveries d
   WHERE d.customer_id = $3 AND d.status = 'pending' AND d.next_attempt_at <= now()
   ORDER BY d.next_attempt_at
   LIMIT $1
     FOR UPDATE SKIP LOCKED
)
UPDATE webhook_deliveries d
   SET next_attempt_at = now() + make_interval(secs => $2), attempts = d.attempts + 1
  FROM due, usage_alert_events e, webhook_endpoints ep
 WHERE d.customer_id = due.customer_id AND d.id = due.id
   AND e.customer_id = d.customer_id AND e.id = d.event_id
   AND ep.id = d.endpoint_id AND ep.deleted_at IS NULL
RETURNING d.customer_id, d.id, d.attempts AS attempt, d.queued_at, e.id AS event_id, e.payload::text AS body,
          ep.url, ep.secret
"""

_RECORD_SQL = """
WITH attempt AS (
  INSERT INTO webhook_attempts (customer_id, delivery_id, status_code, latency_ms, error)
  VALUES ($7, $1, $2, $3, $4)
)
UPDATE webhook_deliveries
   SET status = $5, next_attempt_at = coalesce($6, next_attempt_at), last_status = $2,
       last_error = $4, delivered_at = CASE WHEN $5 = 'delivered' THEN now() END
 WHERE customer_id = $7 AND id = $1 AND status = 'pending'
"""


async def claim(db: Database, limit: int, claim_seconds: float) -> list[Claimed]:
    claimed: list[Claimed] = []
    for due in await db.fetch(_DUE_CUSTOMERS_SQL, limit):
        if len(claimed) >= limit:
            break
        rows = await db.fetch(_CLAIM_SQL, limit - len(claimed), claim_seconds, due["customer_id"])
        claimed += [Claimed(**dict(r)) for r in rows]
    return claimed


async def record(
    db: Database,
    delivery: Claimed,
    outcome: Outcome,
    policy: RetryPolicy,
    now: datetime,
    rng: random.Random,
) -> str:
    """Record the attempt; returns the delivery's status after it."""
    next_at: datetime | None = None
    if outcome.delivered:
        status = "delivered"
    else:
        next_at = now + timedelta(seconds=policy.delay(delivery.attempt, rng))
        status = "failed" if next_at > delivery.queued_at + policy.window else "pending"
    await db.execute(
        _RECORD_SQL,
        delivery.id,
        outcome.status_code,
        outcome.latency_ms,
        outcome.error,
        status,
        next_at if status == "pending" else None,
        delivery.customer_id,
    )
    return status


async def oldest_pending_seconds(db: Database) -> float:
    value = await db.fetchval(
        "SELECT extract(epoch FROM now() - min(queued_at)) FROM webhook_deliveries"
        " WHERE status = 'pending'"
    )
    return 0.0 if value is None else max(0.0, float(value))


async def replay(db: Database, event_id: uuid.UUID) -> int | None:
    """Queue the event again for every current endpoint subscribed to its type (a delivery
    already made is sent again). None when there is no such event."""
    row = await db.fetchrow(
        """
        WITH event AS (SELECT customer_id, id, type FROM usage_alert_events WHERE id = $1),
        queued AS (
          INSERT INTO webhook_deliveries (customer_id, id, event_id, endpoint_id)
          SELECT e.customer_id, uuid_v7(), e.id, ep.id
            FROM event e
            JOIN webhook_endpoints ep
              ON ep.deleted_at IS NULL
             AND (ep.event_types IS NULL OR 'usage_alert.' || e.type = ANY (ep.event_types))
          ON CONFLICT ON CONSTRAINT webhook_deliveries_event_endpoint_key
          DO UPDATE SET status = 'pending', next_attempt_at = now(), queued_at = now(),
                        delivered_at = NULL
          RETURNING 1
        )
        SELECT EXISTS (SELECT 1 FROM event) AS found, (SELECT count(*) FROM queued) AS queued
        """,
        event_id,
    )
    assert row is not None
    return int(row["queued"]) if row["found"] else None
