"""A batch's cost does not grow with its customers' history (gateway/storage/sql/usage_batches.sql).

The set-based statement once looked each item's idempotency key up, and PostgreSQL planned
that look-up on the primary key (customer_id, id): a scan of the customer's whole history per
item. These tests read the index tuples a batch makes PostgreSQL read from usage_events, in
the batch's own transaction, after a history of 300 events.
"""

from __future__ import annotations

import uuid
from typing import Any

from gateway.storage.db import Conn, Database
from tests.conftest import GraphQLClient
from tests.factories import CREATE_USAGE_EVENTS, customer_on_plan, ok, setup_pricing

BATCH = (
    "SELECT item_position, result->>'status' AS status FROM record_usage_batch("
    "$1::uuid[], $2::jsonb, NULL, interval '30 days', interval '5 minutes', NULL)"
    " ORDER BY item_position"
)
# Index tuples read from usage_events' indexes in this transaction.
INDEX_READS = """
SELECT coalesce(sum(pg_stat_get_xact_tuples_returned(i.indexrelid)), 0)::bigint
  FROM pg_index i WHERE i.indrelid = 'usage_events'::regclass
"""


def item(sub: str, customer: str, tx: str) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "subscription_id": sub,
        "target_kind": "usageMeterSlug",
        "target": "generations",
        "amount": 1,
        "transaction_id": tx,
        "usage_date": None,
        "properties": None,
        "require_balance": False,
        "customer_id": customer,
    }


async def history(gql: GraphQLClient, db: Database) -> tuple[str, str]:
    await setup_pricing(gql)
    sub = await customer_on_plan(gql, "user-1", "pro_monthly")
    for block in range(3):
        events = [
            {
                "target": {"usageMeterSlug": "generations"},
                "subscriptionId": sub,
                "amount": 1,
                "transactionId": f"h-{block}-{i}",
            }
            for i in range(100)
        ]
        ok(await gql(CREATE_USAGE_EVENTS, {"input": events}), "createUsageEvents")
    customer = str(await db.fetchval("SELECT customer_id FROM subscriptions WHERE id = $1", sub))
    assert await db.fetchval("SELECT count(*) FROM usage_events") == 300
    return sub, customer


async def batch(conn: Conn, customer: str, items: list[dict[str, Any]]) -> list[str]:
    rows = await conn.fetch(BATCH, [customer], items)
    return [row["status"] for row in rows]


async def test_a_batch_reads_no_index_tuples_of_the_history(
    gql: GraphQLClient, db: Database
) -> None:
    sub, customer = await history(gql, db)
    async with db.transaction() as conn:
        before = await conn.fetchval(INDEX_READS)
        statuses = await batch(conn, customer, [item(sub, customer, f"n-{i}") for i in range(10)])
        reads = await conn.fetchval(INDEX_READS) - before
    assert statuses == ["recorded"] * 10
    assert reads == 0  # with the per-item look-up: 3,000 (each item scanned 300 entries)
    assert await db.fetchval("SELECT count(*) FROM usage_events") == 310


async def test_a_batch_with_a_recorded_key_is_answered_item_by_item(
    gql: GraphQLClient, db: Database
) -> None:
    """The insert meets the key, the statement rolls back, and every item is answered as
    alone: the replay as a replay, the others recorded once."""
    sub, customer = await history(gql, db)
    items = [item(sub, customer, "n-0"), item(sub, customer, "h-0-5"), item(sub, customer, "n-1")]
    async with db.transaction() as conn:
        statuses = await batch(conn, customer, items)
    assert statuses == ["recorded", "replayed", "recorded"]
    assert await db.fetchval("SELECT count(*) FROM usage_events") == 302
    assert (
        await db.fetchval("SELECT count(*) FROM usage_events WHERE transaction_id = 'h-0-5'") == 1
    )
