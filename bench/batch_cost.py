"""Benchmark 2's PostgreSQL cost per event, statement by statement (part of the bench only).

Bench 2 compares ``createUsageEvents`` of 100 events with ``executemany`` of the same 100
rows. This module says where the gateway's PostgreSQL time goes, by calling the statements
directly from one connection, each on the same shape of batch as bench 2's (100 events on 25
subscriptions, 4 each, the load generator's stride), and reading that connection's backend
CPU time:

- ``executemany``: bench 2's baseline, the event rows alone, one execution per row;
- ``writes, set-based``: one statement writing what the gateway writes for such a batch (the
  event rows, each group's totals upsert and balance-row sequence), with no checks, no reads
  for the answers and no answers: a floor for the set-based writes;
- ``_record_usage_steady()``: the gateway's set-based statement, given groups already formed;
- ``record_usage_batch()``: what the gateway calls, which forms the groups first.

Rounds alternate the order of the four. It needs the database's processes on this machine
(embedded, or a local server): CPU time is read from the backend's process (``cpu_seconds``).

``concurrent`` measures events per second instead: ``record_usage_batch()`` and
``executemany`` from bench 2's 4 connections at once, with no gateway process running.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import psutil  # type: ignore[import-untyped, unused-ignore]
import uuid_utils

from bench.baseline_app import INSERT, load_targets

# The rows a batch of the gateway writes in the steady case (no grants left to consume, as in
# bench 2 after its first batches): each event row, its group's totals and balance row.
WRITES = """
WITH ev AS (
  INSERT INTO usage_events (id, customer_id, subscription_id, usage_meter_id, price_id,
                            billing_period_id, period_start, period_end, amount, consumed,
                            covered, seq, transaction_id, usage_date, properties)
  SELECT e.id, e.cust, e.sub, e.meter, e.price, e.period, e.ps, e.pe, 1, 1, 0,
         mb.event_seq + e.ord, e.tx, now(), '{}'::jsonb
    FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::uuid[], $6::uuid[],
                $7::timestamptz[], $8::timestamptz[], $9::text[])
         WITH ORDINALITY AS e(id, cust, sub, meter, price, period, ps, pe, tx, ord)
    JOIN meter_balances mb ON mb.customer_id = e.cust AND mb.subscription_id = e.sub
                          AND mb.usage_meter_id = e.meter
  ON CONFLICT (customer_id, usage_meter_id, transaction_id) DO NOTHING
), g AS (
  SELECT cust, sub, meter, price, ps, min(pe) AS pe, count(*) AS n
    FROM unnest($2::uuid[], $3::uuid[], $4::uuid[], $5::uuid[], $7::timestamptz[],
                $8::timestamptz[]) AS e(cust, sub, meter, price, ps, pe)
   GROUP BY 1, 2, 3, 4, 5
), tot AS (
  INSERT INTO usage_totals AS t (customer_id, subscription_id, usage_meter_id, period_start,
                                 price_id, period_end, used, covered, uncovered)
  SELECT cust, sub, meter, ps, price, pe, n, 0, n FROM g
  ON CONFLICT (customer_id, subscription_id, usage_meter_id, period_start, price_id)
  DO UPDATE SET used = t.used + excluded.used, uncovered = t.uncovered + excluded.uncovered
)
UPDATE meter_balances mb SET event_seq = mb.event_seq + g.n FROM g
 WHERE mb.customer_id = g.cust AND mb.subscription_id = g.sub AND mb.usage_meter_id = g.meter
"""
BATCH = (
    "SELECT item_position, result FROM record_usage_batch($1::uuid[], $2::jsonb, NULL,"
    " interval '30 days', interval '5 minutes', NULL)"
)
STEADY = (
    "SELECT cardinality(recorded_positions) AS answered"
    " FROM _record_usage_steady($1::uuid[], $2::jsonb, $3::jsonb, NULL)"
)
NAMES = ("executemany", "writes, set-based", "_record_usage_steady()", "record_usage_batch()")
CONCURRENT = ("executemany", "record_usage_batch()")


async def _connect(dsn: str) -> Any:
    """A connection as the gateway's: UTC, jsonb through orjson."""
    conn = await asyncpg.connect(dsn, server_settings={"timezone": "UTC"})
    await conn.set_type_codec(
        "jsonb",
        encoder=lambda v: orjson.dumps(v).decode(),
        decoder=orjson.loads,
        schema="pg_catalog",
    )
    return conn


def _row(target: tuple[Any, ...], transaction_id: str) -> tuple[Any, ...]:
    """One row of the executemany baseline (INSERT of bench.baseline_app), amount 1."""
    return (uuid.UUID(bytes=uuid_utils.uuid7().bytes), *target[:7], 1, transaction_id)


def _event(meter: str, target: tuple[Any, ...], transaction_id: str) -> dict[str, Any]:
    """One item of record_usage_batch()'s payload, as the gateway prepares it."""
    return {
        "event_id": str(uuid_utils.uuid7()),
        "customer_id": str(target[0]),
        "subscription_id": str(target[1]),
        "target_kind": "usageMeterSlug",
        "target": meter,
        "amount": 1,
        "transaction_id": transaction_id,
        "usage_date": None,
        "properties": None,
        "require_balance": False,
    }


def cpu_seconds(pid: int) -> Callable[[], float]:
    """A process's CPU seconds so far: from /proc/PID/schedstat (nanoseconds) where there is
    one, else psutil's user + system (clock ticks, 10 ms: at 0.15 ms per event a figure of
    1,280 events would be read to about 5%)."""
    path = Path(f"/proc/{pid}/schedstat")
    if not path.exists():
        process = psutil.Process(pid)

        def ticks() -> float:
            times = process.cpu_times()
            return float(times.user + times.system)

        return ticks

    def schedstat() -> float:
        return int(path.read_text().split()[0]) / 1e9

    return schedstat


async def _record_batch(conn: Any, meter: str, rows: list[tuple[Any, ...]], txs: list[str]) -> None:
    """One record_usage_batch() of an event per (target, transaction id), as the gateway sends
    it (its customers sorted); every event must come back recorded."""
    got = await conn.fetch(
        BATCH,
        sorted({t[0] for t in rows}),
        [_event(meter, t, tx) for t, tx in zip(rows, txs, strict=True)],
    )
    statuses = [r["result"]["status"] for r in got]
    assert statuses == ["recorded"] * len(rows), f"record_usage_batch() answered {statuses}"


async def batch_cost(
    dsn: str,
    meter: str,
    subscriptions: list[str],
    stride: int,
    size: int,
    rounds: int = 6,
    batches: int = 30,
) -> dict[str, list[float]]:
    """PostgreSQL CPU seconds per event of each of NAMES, one figure per round."""
    conn = await _connect(dsn)
    try:
        cpu = cpu_seconds(await conn.fetchval("SELECT pg_backend_pid()"))
        targets = await load_targets(conn, meter)
        # Bench 2's batch of client 0: item i on subscription (i * stride) mod n.
        picked = [subscriptions[(i * stride) % len(subscriptions)] for i in range(size)]
        rows = [targets[s] for s in picked]
        customers = sorted({r[0] for r in rows})
        run = f"bc{time.time_ns()}"
        seq = [0]

        def tx(tag: str, i: int) -> str:
            return f"{run}{tag}-{seq[0]}-{i}"

        def item(i: int, t: tuple[Any, ...], tag: str) -> dict[str, Any]:
            return _event(meter, t, tx(tag, i))

        def txs(tag: str) -> list[str]:
            return [tx(tag, i) for i in range(size)]

        async def executemany() -> None:
            await conn.executemany(
                INSERT,
                [_row(t, tx("e", i)) for i, t in enumerate(rows)],
            )

        async def writes() -> None:
            data = sorted(
                (
                    (uuid.UUID(bytes=uuid_utils.uuid7().bytes), *t[:7], tx("w", i))
                    for i, t in enumerate(rows)
                ),
                key=lambda r: (r[1], r[2], r[3]),  # the lock order
            )
            await conn.execute(WRITES, *[list(column) for column in zip(*data, strict=True)])

        async def steady() -> None:
            items = [item(i, t, "s") for i, t in enumerate(rows)]
            groups: dict[tuple[str, str, str], list[int]] = {}
            for i, t in enumerate(rows):
                groups.setdefault((str(t[0]), str(t[1]), str(t[2])), []).append(i + 1)
            payload = [
                {"customer": k[0], "sub": k[1], "meter": k[2], "positions": v}
                for k, v in sorted(groups.items())
            ]
            got = await conn.fetchval(STEADY, customers, payload, items)
            assert got == size, f"_record_usage_steady() answered {got} of {size}"

        async def batch() -> None:
            await _record_batch(conn, meter, rows, txs("b"))

        calls: dict[str, Callable[[], Awaitable[None]]] = dict(
            zip(NAMES, (executemany, writes, steady, batch), strict=True)
        )

        async def times(call: Callable[[], Awaitable[None]], n: int) -> float:
            start = cpu()
            for _ in range(n):
                seq[0] += 1
                await call()
            return (cpu() - start) / (n * size)

        for call in calls.values():  # warm: plans cached, pages read
            await times(call, 5)
        out: dict[str, list[float]] = {name: [] for name in NAMES}
        for r in range(rounds):
            order = list(NAMES) if r % 2 == 0 else list(reversed(NAMES))
            for name in order:
                out[name].append(await times(calls[name], batches))
        return out
    finally:
        await conn.close()


async def concurrent(
    dsn: str,
    meter: str,
    subscriptions: list[str],
    connections: int,
    size: int,
    rounds: int = 3,
    seconds: float = 4.0,
) -> dict[str, list[float]]:
    """Events per second of ``executemany`` and of ``record_usage_batch()`` called directly from
    ``connections`` connections at once, each sending bench 2's batches (client k: item i on
    subscription (k + i * connections) mod n), one figure per round, rounds alternating the
    order. No gateway process runs: the two share the machine only with this client, so the
    ratio says how close PostgreSQL alone comes to ``executemany`` under bench 2's concurrency,
    row locks included; bench 2's own ratio adds the gateway's server side."""
    conns = [await _connect(dsn) for _ in range(connections)]
    try:
        targets = await load_targets(conns[0], meter)
        run = f"bk{time.time_ns()}"
        shapes = [
            [
                targets[subscriptions[(k + i * connections) % len(subscriptions)]]
                for i in range(size)
            ]
            for k in range(connections)
        ]

        async def executemany(k: int, txs: list[str]) -> None:
            await conns[k].executemany(
                INSERT, [_row(t, tx) for t, tx in zip(shapes[k], txs, strict=True)]
            )

        async def batch(k: int, txs: list[str]) -> None:
            await _record_batch(conns[k], meter, shapes[k], txs)

        sends = dict(zip(CONCURRENT, (executemany, batch), strict=True))

        def txs(tag: str, k: int, seq: int) -> list[str]:
            return [f"{run}{tag}-{k}-{seq}-{i}" for i in range(size)]

        async def throughput(name: str, tag: str) -> float:
            loop = asyncio.get_running_loop()
            end = loop.time() + seconds
            done = [0]

            async def client(k: int) -> None:
                seq = 0
                while loop.time() < end:
                    seq += 1
                    await sends[name](k, txs(tag, k, seq))
                    done[0] += size

            await asyncio.gather(*(client(k) for k in range(connections)))
            return done[0] / seconds

        # Warm: each connection's backend plans its statements on its first calls.
        for name, send in sends.items():
            for k in range(connections):
                await send(k, txs(f"w{name[0]}", k, 0))
        out: dict[str, list[float]] = {name: [] for name in CONCURRENT}
        for r in range(rounds):
            order = list(CONCURRENT) if r % 2 == 0 else list(reversed(CONCURRENT))
            for name in order:
                out[name].append(await throughput(name, f"{r}{name[0]}"))
        return out
    finally:
        for conn in conns:
            await conn.close()


# Group commit's shape (bench 1): n single events from n clients, each on a subscription of
# its own, written by one record_usage_batch(); beside bench 1's baseline, one INSERT per event.
GROUP_SIZES = (1, 4, 16, 32)
GROUP_EVENTS = 1280  # per figure
ONE_BY_ONE = "one INSERT per event"


def group_name(size: int) -> str:
    events = "1 event" if size == 1 else f"{size} events on {size} subscriptions"
    return f"record_usage_batch() of {events}"


async def group_sizes(
    dsn: str,
    meter: str,
    subscriptions: list[str],
    sizes: tuple[int, ...] = GROUP_SIZES,
    rounds: int = 4,
    events: int = GROUP_EVENTS,
) -> dict[str, list[float]]:
    """PostgreSQL CPU seconds per event of record_usage_batch() given ``size`` events on as
    many subscriptions, each call its own transaction as a group-committed batch is, and of
    ``ONE_BY_ONE`` (bench 1's baseline: one statement and one commit per event); ``events``
    events per figure, one figure per round, rounds alternating the order. What a batch costs
    beyond its events (the statement's fixed part) is paid once per call: the figures say how
    the cost per event falls as group commit gathers more events per statement."""
    if len(subscriptions) < max(sizes):
        raise ValueError(f"{max(sizes)} events on as many subscriptions need as many of them")
    conn = await _connect(dsn)
    try:
        cpu = cpu_seconds(await conn.fetchval("SELECT pg_backend_pid()"))
        targets = await load_targets(conn, meter)
        run = f"gs{time.time_ns()}"
        seq = [0]

        def picked(n: int) -> list[tuple[Any, ...]]:
            seq[0] += 1
            return [targets[subscriptions[(seq[0] * n + i) % len(subscriptions)]] for i in range(n)]

        async def one_by_one(n: int) -> None:
            for i, t in enumerate(picked(n)):
                await conn.execute(INSERT, *_row(t, f"{run}i-{seq[0]}-{i}"))

        async def batch(n: int) -> None:
            rows = picked(n)
            await _record_batch(conn, meter, rows, [f"{run}b{n}-{seq[0]}-{i}" for i in range(n)])

        # name -> (call, events per call); the INSERTs go 16 to a call, each its own statement.
        calls: dict[str, tuple[Callable[[int], Awaitable[None]], int]] = {
            ONE_BY_ONE: (one_by_one, 16),
            **{group_name(n): (batch, n) for n in sizes},
        }

        async def per_event(name: str, total: int) -> float:
            call, n = calls[name]
            repeats = max(1, total // n)
            start = cpu()
            for _ in range(repeats):
                await call(n)
            return (cpu() - start) / (repeats * n)

        for name in calls:  # warm: plans cached, pages read
            await per_event(name, 32)
        out: dict[str, list[float]] = {name: [] for name in calls}
        for r in range(rounds):
            for name in calls if r % 2 == 0 else reversed(calls):
                out[name].append(await per_event(name, events))
        return out
    finally:
        await conn.close()
