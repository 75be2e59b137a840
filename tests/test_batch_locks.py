"""A batch meets a balance row that another writer creates while it runs.

The steady statement of a batch (usage_batches.sql) reads a group's starting point (sequence
number, used, credit left) after locking the group's balance row. A row that does not exist
when the batch takes its locks, but is committed by another writer before the batch reads it,
must not be read unlocked: events written beside that writer's would start from its stale
state (two events with one sequence number, balances that skip the one crossing an alert's
threshold). This pins that order with locks instead of timing: the batch is held between its
row locks and its statement by a lock on usage_alerts (the only table it reads in between).
"""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.storage.db import Database
from tests.conftest import GraphQLClient
from tests.factories import customer_on_plan, setup_pricing
from tests.test_batch_bounds import item

BATCH = (
    "SELECT item_position, result FROM record_usage_batch("
    "$1::uuid[], $2::jsonb, NULL, interval '30 days', interval '5 minutes', NULL)"
    " ORDER BY item_position"
)
SINGLE = (
    "SELECT record_usage_event($1::uuid, gen_random_uuid(), NULL, $2::uuid, 'usageMeterSlug',"
    " 'generations', 1, 'single', NULL, NULL, false, interval '30 days', interval '5 minutes')"
)


async def _waits(db: Database, pid: int, locktype: str) -> None:
    """Until the backend ``pid`` waits for a lock of ``locktype``."""
    for _ in range(500):
        if await db.fetchval(
            "SELECT count(*) FROM pg_locks WHERE pid = $1 AND NOT granted AND locktype = $2",
            pid,
            locktype,
        ):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"backend {pid} never waited for a {locktype} lock")


async def test_a_balance_row_created_meanwhile_is_not_read_unlocked(
    gql: GraphQLClient, db: Database
) -> None:
    await setup_pricing(gql)
    sub = await customer_on_plan(gql, "user-1", "pro_monthly")
    customer, meter, period_start = (
        await db.fetchrow(
            "SELECT s.customer_id, m.id, bp.period_start FROM subscriptions s"
            " JOIN customers c ON c.id = s.customer_id"
            " JOIN usage_meters m ON m.pricing_model_id = c.pricing_model_id"
            "  AND m.slug = 'generations'"
            " CROSS JOIN LATERAL billing_period(s.start_date, s.interval_unit, s.interval_count,"
            "  now()) bp WHERE s.id = $1",
            sub,
        )
    ).values()
    assert await db.fetchval("SELECT count(*) FROM meter_balances") == 0  # no event yet
    items = [item(sub, str(customer), f"b-{i}") for i in range(3)]
    pool = db.pool
    gate, batcher, single = [await pool.acquire() for _ in range(3)]
    try:
        gate_tx = gate.transaction()
        await gate_tx.start()
        await gate.execute("LOCK TABLE usage_alerts IN ACCESS EXCLUSIVE MODE")
        batch_pid = await batcher.fetchval("SELECT pg_backend_pid()")
        batch = asyncio.ensure_future(batcher.fetch(BATCH, [customer], items))
        await _waits(db, batch_pid, "relation")  # its row locks taken: none, no row yet
        # The row appears and is committed, as a first event's (without one: its alerts hook
        # would wait on the gate too).
        await db.execute(
            "INSERT INTO meter_balances (customer_id, subscription_id, usage_meter_id,"
            " event_seq, grants_period_start) VALUES ($1, $2, $3, 0, $4)",
            customer,
            sub,
            meter,
            period_start,
        )
        # A single event locks it and waits at its alerts hook, uncommitted.
        single_pid = await single.fetchval("SELECT pg_backend_pid()")
        single_tx = single.transaction()
        await single_tx.start()
        recorded = asyncio.ensure_future(single.fetchval(SINGLE, customer, sub))
        await _waits(db, single_pid, "relation")
        await gate_tx.commit()
        one = await recorded
        await _waits(db, batch_pid, "transactionid")  # the batch waits for the single's commit
        assert not batch.done()
        await single_tx.commit()
        rows = await batch
    finally:
        for conn in (gate, batcher, single):
            await pool.release(conn)
    answers: list[Any] = [r["result"] for r in rows]
    assert one["status"] == "recorded" and one["balance"]["used_balance"] == 1
    assert [a["status"] for a in answers] == ["recorded"] * 3
    # Unlocked, the batch read the row before the single: used 1, 2, 3 and seq 1, 1, 2, 3.
    # (A steady group's answers other than its last carry used_balance themselves.)
    used = [a["balance"]["used_balance"] if "balance" in a else a["used_balance"] for a in answers]
    assert used == [2, 3, 4]
    seqs = await db.fetch("SELECT transaction_id, seq FROM usage_events ORDER BY seq")
    assert [(r["transaction_id"], r["seq"]) for r in seqs] == [
        ("single", 1),
        ("b-0", 2),
        ("b-1", 3),
        ("b-2", 4),
    ]
    assert await db.fetchval("SELECT event_seq FROM meter_balances") == 4
    assert await db.fetchval("SELECT sum(used) FROM usage_totals") == 4
