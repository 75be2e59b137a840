"""The soak's load generator: an open loop at a fixed request rate, in a process of its own.

Run as ``python -m bench.openloop`` with a JSON spec on stdin; prints a JSON result on stdout.
Pinned to one core like ``bench.loadgen``, whose HTTP/1.1 connection it reuses.

Request *i* is due at ``start + i / rate`` whatever happened to the earlier ones (an open
loop: a slow server does not slow the client down, so latency is not understated). Every
``read_every``-th request is a ``usageBalance`` read of a dashboard customer, the others are
createUsageEvent on subscription *i* mod N with a fresh transactionId. Requests are sent over a
pool of ``connections`` keep-alive connections; a request waiting for a free connection counts
that wait in its latency (measured from the time it was due). Bounded three ways: the request
count (rate x (warmup + duration)), a per-request timeout, and at most ``max_pending``
requests waiting at once (more are counted as errors, not queued).

The result: for every interval of ``interval`` seconds after the warm-up, the number of
answers, errors and the latency percentiles (p50, p99, max) of the requests completed in it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from typing import Any

import orjson

from bench.loadgen import Connection, HttpError, _cpu_seconds, _head, _pin
from bench.stats import percentile

_FAILURES = (
    OSError,
    asyncio.IncompleteReadError,
    asyncio.LimitOverrunError,
    TimeoutError,
    HttpError,
    ValueError,
)


async def open_loop(spec: dict[str, Any]) -> dict[str, Any]:
    rate = float(spec["rate"])
    warmup = float(spec["warmup"])
    duration = float(spec["duration"])
    interval = float(spec["interval"])
    read_every = int(spec.get("read_every", 0))
    timeout = float(spec.get("timeout", 10.0))
    max_pending = int(spec.get("max_pending", 2000))
    subs: list[str] = spec["subscriptions"]
    customers: list[str] = spec["customers"]
    run = spec.get("run_id", "soak")
    total = int(rate * (warmup + duration))
    buckets = max(1, round(duration / interval))
    latencies: list[list[float]] = [[] for _ in range(buckets)]
    errors = [0] * buckets
    warm_errors = [0]
    first_error: list[str] = []
    pool: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(int(spec["connections"])):
        pool.put_nowait(Connection(spec["host"], int(spec["port"])))

    def request(i: int) -> tuple[bytes, bytes]:
        if read_every and i % read_every == read_every - 1:
            variables = {"meter": spec["meter"], "customer": customers[i % len(customers)]}
            query, expect = spec["read_query"], b'"availableBalance"'
        else:
            variables = {
                "input": {
                    "target": {"usageMeterSlug": spec["meter"]},
                    "subscriptionId": subs[i % len(subs)],
                    "amount": 1,
                    "transactionId": f"{run}-{i}",
                }
            }
            query, expect = spec["event_query"], b'"UsageEventRecorded"'
        payload = orjson.dumps({"query": query, "variables": variables})
        return _head(spec, len(payload)) + payload, expect

    start = time.perf_counter()
    measured = start + warmup
    pending = [0]

    def record(done: float, latency: float | None, error: str | None) -> None:
        if error is not None and not first_error:
            first_error.append(error)
        if done < measured:
            warm_errors[0] += error is not None
            return
        slot = min(buckets - 1, int((done - measured) / interval))
        if error is None and latency is not None:
            latencies[slot].append(latency)
        else:
            errors[slot] += 1

    async def one(i: int, due: float) -> None:
        data, expect = request(i)
        conn = await pool.get()
        error: str | None = None
        try:
            async with asyncio.timeout(timeout):
                status, answer = await conn.request(data)
            if status != 200 or expect not in answer:
                error = f"HTTP {status}: {answer[:300]!r}"
        except _FAILURES as exc:
            error = repr(exc)[:300]
            conn.close()
        finally:
            pool.put_nowait(conn)
            pending[0] -= 1
        done = time.perf_counter()
        record(done, done - due, error)

    tasks: set[asyncio.Task[None]] = set()
    cpu_start = 0.0
    for i in range(total):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if not cpu_start and due >= measured:
            cpu_start = _cpu_seconds()
        if pending[0] >= max_pending:
            record(time.perf_counter(), None, "client: too many requests waiting")
            continue
        pending[0] += 1
        task = asyncio.ensure_future(one(i, due))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks, timeout=timeout + 5)
    cpu = (_cpu_seconds() - cpu_start) / duration
    while not pool.empty():
        pool.get_nowait().close()
    return {
        "interval": duration / buckets,
        "intervals": [
            {
                "ok": len(lat),
                "errors": err,
                "p50": percentile(lat, 50),
                "p99": percentile(lat, 99),
                "max": max(lat) if lat else float("nan"),
            }
            for lat, err in zip(latencies, errors, strict=True)
        ],
        "warmup_errors": warm_errors[0],
        "unfinished": len(tasks),
        "client_cpu": cpu,
        "first_error": first_error[0] if first_error else None,
    }


def main() -> int:
    spec = json.loads(sys.stdin.read())
    cpu = _pin(spec.get("cpu"))
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    result = runner(open_loop(spec))
    result["cpu"] = cpu
    with contextlib.suppress(BrokenPipeError):
        sys.stdout.write(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
