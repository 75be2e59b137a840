"""Webhook endpoints: create (the secret is returned once), delete, list with deliveries."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gateway.billing.subscriptions import parse_id
from gateway.errors import UserError, invalid, not_found
from gateway.storage.db import Database
from gateway.webhooks.addresses import AddressPolicy, url_problem
from gateway.webhooks.signing import new_secret

EVENT_TYPES = ("usage_alert.triggered", "usage_alert.resolved")
MAX_ENDPOINTS = 100
MAX_DELIVERIES = 100


@dataclass(frozen=True, slots=True)
class EndpointRow:
    id: uuid.UUID
    url: str
    event_types: list[str]


@dataclass(frozen=True, slots=True)
class AttemptRow:
    attempted_at: datetime
    status_code: int | None
    latency_ms: float
    error: str | None


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    id: uuid.UUID
    endpoint_id: uuid.UUID
    event_id: uuid.UUID
    event_type: str
    status: str
    attempt_count: int
    next_attempt_at: datetime | None
    delivered_at: datetime | None
    created_at: datetime
    attempts: list[AttemptRow]


def _endpoint(r: Any) -> EndpointRow:
    types = r["event_types"]
    return EndpointRow(
        id=r["id"], url=r["url"], event_types=list(EVENT_TYPES) if types is None else list(types)
    )


async def create_endpoint(
    db: Database, policy: AddressPolicy, url: str, event_types: list[str] | None
) -> tuple[EndpointRow, str] | UserError:
    problem = url_problem(url, policy)
    if problem is not None:
        return invalid(problem, "input", "url")
    if event_types is not None:
        unknown = sorted(set(event_types) - set(EVENT_TYPES))
        if unknown or not event_types:
            return invalid(
                f"eventTypes must be among {', '.join(EVENT_TYPES)}", "input", "eventTypes"
            )
        event_types = sorted(set(event_types), key=EVENT_TYPES.index)
    secret = new_secret()
    row = await db.fetchrow(
        """
        INSERT INTO webhook_endpoints (url, secret, event_types)
        SELECT $1, $2, $3
         WHERE (SELECT count(*) FROM webhook_endpoints WHERE deleted_at IS NULL) < $4
        RETURNING id, url, event_types
        """,
        url,
        secret,
        event_types,
        MAX_ENDPOINTS,
    )
    if row is None:
        return invalid(f"at most {MAX_ENDPOINTS} webhook endpoints", "input", "url")
    return _endpoint(row), secret


async def delete_endpoint(db: Database, endpoint_id: str) -> str | UserError:
    """The endpoint stops receiving; its pending deliveries are canceled."""
    parsed = parse_id(endpoint_id)
    deleted = None
    if parsed is not None:
        deleted = await db.fetchval(
            """
            WITH gone AS (
              UPDATE webhook_endpoints SET deleted_at = now()
               WHERE id = $1 AND deleted_at IS NULL RETURNING id
            ), canceled AS (
              UPDATE webhook_deliveries d SET status = 'canceled'
                FROM gone WHERE d.endpoint_id = gone.id AND d.status = 'pending'
            )
            SELECT id FROM gone
            """,
            parsed,
        )
    if deleted is None:
        return not_found(f"no webhook endpoint {endpoint_id}", "input", "endpointId")
    return str(deleted)


async def list_endpoints(db: Database) -> list[EndpointRow]:
    rows = await db.fetch(
        "SELECT id, url, event_types FROM webhook_endpoints WHERE deleted_at IS NULL"
        " ORDER BY created_at, id LIMIT $1",
        MAX_ENDPOINTS,
    )
    return [_endpoint(r) for r in rows]


async def recent_deliveries(
    db: Database, endpoint_ids: list[uuid.UUID], first: int
) -> dict[uuid.UUID, list[DeliveryRow]]:
    """The newest ``first`` deliveries of each endpoint, with their attempts, in one trip."""
    rows = await db.fetch(
        """
        SELECT d.id, d.endpoint_id, d.event_id, 'usage_alert.' || e.type AS event_type,
               d.status, d.attempts AS attempt_count, d.next_attempt_at, d.delivered_at,
               d.created_at,
               coalesce((SELECT jsonb_agg(jsonb_build_object(
                          'attempted_at', a.attempted_at, 'status_code', a.status_code,
                          'latency_ms', a.latency_ms, 'error', a.error)
                          ORDER BY a.attempted_at, a.id)
                           FROM webhook_attempts a
                          WHERE a.customer_id = d.customer_id AND a.delivery_id = d.id),
                        '[]') AS attempts
          FROM unnest($1::uuid[]) AS k(endpoint_id)
          CROSS JOIN LATERAL (
            SELECT * FROM webhook_deliveries x WHERE x.endpoint_id = k.endpoint_id
             ORDER BY x.created_at DESC, x.id DESC LIMIT $2) d
          JOIN usage_alert_events e ON e.customer_id = d.customer_id AND e.id = d.event_id
         ORDER BY d.created_at DESC, d.id DESC
        """,
        endpoint_ids,
        first,
    )
    found: dict[uuid.UUID, list[DeliveryRow]] = {k: [] for k in endpoint_ids}
    for r in rows:
        attempts = [
            AttemptRow(
                attempted_at=datetime.fromisoformat(a["attempted_at"]),
                status_code=a["status_code"],
                latency_ms=float(a["latency_ms"]),
                error=a["error"],
            )
            for a in r["attempts"]  # jsonb, decoded by the pool's codec
        ]
        fields = {k: r[k] for k in DeliveryRow.__slots__ if k != "attempts"}
        found[r["endpoint_id"]].append(DeliveryRow(**fields, attempts=attempts))
    return found


async def deliveries_by_endpoint(
    db: Database, keys: list[tuple[uuid.UUID, int]]
) -> dict[tuple[uuid.UUID, int], list[DeliveryRow]]:
    """For a DataLoader keyed by (endpoint, first): one statement per distinct ``first``."""
    found: dict[tuple[uuid.UUID, int], list[DeliveryRow]] = {}
    for first in sorted({k[1] for k in keys}):
        ids = [k[0] for k in keys if k[1] == first]
        for endpoint_id, rows in (await recent_deliveries(db, ids, first)).items():
            found[(endpoint_id, first)] = rows
    return found
