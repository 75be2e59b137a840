"""Fan-out of live balance updates: commit to subscriber message, with N open subscriptions.

    .venv/bin/python -m bench.live_fanout [--subscriptions 1000] [--rounds 20]

One gateway process (`billing-gateway serve`, one worker) on a fresh database (embedded
PostgreSQL, or DATABASE_URL as bench/run uses it); N subscriptions to one customer's balance
(``usageBalance``) over N/20 WebSocket connections (20 a connection, the default limit), all
from this process. Each round commits a manual grant on that balance (the gateway's own
``grant_usage_credits``, from this process) and times, for every subscription, the message
that carries the new balance: from the moment the COMMIT returned (so the figure is the
NOTIFY delivery, the gateway's re-read and the WebSocket send). Memory: the worker's resident
set before and after the subscriptions opened.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

from bench.scenario import PRICING, GraphQL, _customer, _expect, create_secret_key
from bench.servers import database, gateway_command, server, server_env

PER_CONNECTION = 20
SUBSCRIPTION = """subscription($sub: ID, $c: String) {
  usageBalance(meterSlug: "generations", subscriptionId: $sub, customerExternalId: $c) {
    availableBalance
  }
}"""


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _open(url: str, key: str, sub: str, count: int, first_id: int) -> ClientConnection:
    ws = await connect(url, subprotocols=[Subprotocol("graphql-transport-ws")], max_queue=None)
    await ws.send(
        json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {key}"}})
    )
    assert json.loads(await ws.recv())["type"] == "connection_ack"
    for i in range(first_id, first_id + count):
        payload = {"query": SUBSCRIPTION, "variables": {"sub": sub, "c": "fan-out"}}
        await ws.send(json.dumps({"id": str(i), "type": "subscribe", "payload": payload}))
    for _ in range(count):  # the first message: the balance now
        assert json.loads(await ws.recv())["type"] == "next"
    return ws


def run(subscriptions: int, rounds: int) -> dict[str, Any]:
    with database() as db_info:
        env = server_env(db_info.url, db_info.workdir)
        with server("gateway", gateway_command(1), env, 1, db_info.workdir) as gateway:
            return asyncio.run(
                measure(db_info.url, gateway.url, gateway.worker_pids[0], subscriptions, rounds)
            )


async def measure(
    database_url: str, base_url: str, pid: int, subscriptions: int, rounds: int
) -> dict[str, Any]:
    from gateway.billing.balances import grant_usage_credits
    from gateway.storage.db import Database

    key = await create_secret_key(database_url)
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as http:
        gql = GraphQL(http, key)
        model = await gql(
            """mutation($d: String!) { setupPricingModel(input: {definition: $d}) {
                 __typename ... on UserError { message } } }""",
            {"d": PRICING},
        )
        _expect(model["setupPricingModel"], "PricingModelSetUp")
        sub = await _customer(gql, "fan-out", None)
    before = rss(pid)
    url = base_url.replace("http://", "ws://") + "/graphql"
    sockets = []
    for first in range(0, subscriptions, PER_CONNECTION):
        count = min(PER_CONNECTION, subscriptions - first)
        sockets.append(await _open(url, key, sub, count, first))
    await asyncio.sleep(1)
    after = rss(pid)
    db = Database(database_url, min_size=1, max_size=2)
    await db.connect()
    latencies: list[float] = []
    try:
        for _ in range(rounds):
            waiting = [asyncio.create_task(_drain(ws)) for ws in sockets]
            await grant_usage_credits(db, sub, "generations", 1, None)
            committed = time.perf_counter()
            for arrivals in await asyncio.gather(*waiting):
                latencies += [(t - committed) * 1000 for t in arrivals]
            await asyncio.sleep(0.2)
    finally:
        await db.close()
        for ws in sockets:
            await ws.close()
    return {
        "subscriptions": subscriptions,
        "rounds": rounds,
        "messages": len(latencies),
        "p50_ms": round(percentile(latencies, 0.50), 1),
        "p99_ms": round(percentile(latencies, 0.99), 1),
        "max_ms": round(max(latencies), 1),
        "rss_before_mb": round(before / 2**20, 1),
        "rss_after_mb": round(after / 2**20, 1),
        "kb_per_subscription": round((after - before) / subscriptions / 1024, 1),
    }


async def _drain(ws: ClientConnection) -> list[float]:
    """Arrival times of one message per subscription of ``ws``."""
    arrivals = []
    for _ in range(PER_CONNECTION):
        message = json.loads(await asyncio.wait_for(ws.recv(), 30))
        assert message["type"] == "next", message
        arrivals.append(time.perf_counter())
    return arrivals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscriptions", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    if args.subscriptions % PER_CONNECTION:
        parser.error(f"--subscriptions must be a multiple of {PER_CONNECTION}")
    print(json.dumps(run(args.subscriptions, args.rounds), indent=2))


if __name__ == "__main__":
    main()
