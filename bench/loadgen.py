"""The load generator: HTTP/1.1 keep-alive clients on asyncio, in a process of its own.

Run as ``python -m bench.loadgen`` with a JSON spec on stdin; prints a JSON result on stdout.
It pins itself to one core (``os.sched_setaffinity``) and uses uvloop when installed. Every
loop is bounded twice: by a deadline and by a request count.

Two modes:

- ``closed``: ``connections`` clients, each sending its next request as soon as the previous
  answer arrived, for ``warmup`` + ``duration`` seconds. Requests that complete inside the
  measurement window count; their latency (write of the request to the last byte of the
  answer) is recorded.
- ``blocks``: one client, sequential requests, block after block (for latency medians of
  interleaved variants, e.g. a small and a large history).

Request bodies are built per request, so every usage event has a fresh transactionId:
``kind`` ``usage_event`` (createUsageEvent), ``usage_events`` (createUsageEvents, a batch),
``baseline_event`` (the bare endpoint) or ``static`` (the same body every time). An answer
counts as a success only if its status is 200 and ``expect`` occurs ``expect_count`` times in
the body (e.g. ``"UsageEventRecorded"`` 100 times for a batch of 100).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import resource
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson

Body = Callable[[int, int], bytes]


def _pin(cpu: int | None) -> int | None:
    if cpu is None or not hasattr(os, "sched_setaffinity"):
        return None
    allowed = sorted(os.sched_getaffinity(0))
    chosen = cpu if cpu in allowed else allowed[-1]
    os.sched_setaffinity(0, {chosen})
    return chosen


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class HttpError(Exception):
    pass


class Connection:
    """One keep-alive HTTP/1.1 connection: write a request, read one answer."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(
            self.host, self.port, limit=8 * 1024 * 1024
        )

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def request(self, data: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            await self.open()
        assert self.reader is not None and self.writer is not None
        reader = self.reader
        self.writer.write(data)
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        lower = head.lower()
        at = lower.find(b"\r\ncontent-length:")
        if at >= 0:
            length = int(lower[at + 17 : lower.index(b"\r\n", at + 2)])
            body = await reader.readexactly(length)
        elif b"\r\ntransfer-encoding: chunked" in lower:
            parts = []
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    while await reader.readuntil(b"\r\n") != b"\r\n":
                        pass
                    break
                parts.append(await reader.readexactly(size))
                await reader.readexactly(2)
            body = b"".join(parts)
        else:
            raise HttpError("answer without Content-Length")
        if b"\r\nconnection: close" in lower:
            self.close()
        return status, body


def _head(spec: dict[str, Any], length: int) -> bytes:
    lines = [
        f"POST {spec['path']} HTTP/1.1",
        f"Host: {spec['host']}:{spec['port']}",
        "Content-Type: application/json",
        "Accept: application/json",
        f"Content-Length: {length}",
    ]
    if spec.get("token"):
        lines.append(f"Authorization: Bearer {spec['token']}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _body_factory(spec: dict[str, Any]) -> Body:
    """body(client, sequence) -> request bytes (head and body)."""
    kind = spec["kind"]
    run = spec.get("run_id", "r")
    subs: list[str] = spec.get("subscriptions", [])
    meter = spec.get("meter", "")
    query = spec.get("query", "")

    def event(client: int, seq: int, index: int = 0) -> dict[str, Any]:
        return {
            "target": {"usageMeterSlug": meter},
            "subscriptionId": subs[(client + index) % len(subs)],
            "amount": 1,
            "transactionId": f"{run}-{client}-{seq}-{index}",
        }

    def with_head(payload: bytes) -> bytes:
        return _head(spec, len(payload)) + payload

    if kind in ("usage_event", "reserve_finalize"):  # the latter: the reserve request
        return lambda c, s: with_head(
            orjson.dumps({"query": query, "variables": {"input": event(c, s)}})
        )
    if kind == "usage_events":
        size = int(spec["batch"])
        stride = int(spec.get("stride", 1))

        def batch(c: int, s: int) -> bytes:
            items = [event(c, s, i * stride) for i in range(size)]
            return with_head(orjson.dumps({"query": query, "variables": {"input": items}}))

        return batch
    if kind == "baseline_event":
        return lambda c, s: with_head(orjson.dumps(event(c, s)))
    if kind == "static":
        fixed = with_head(orjson.dumps({"query": query, "variables": spec.get("variables", {})}))
        return lambda c, s: fixed
    raise ValueError(f"unknown kind {kind}")


_RESERVATION_ID = re.compile(rb'"reservation":\{"id":"([0-9a-f-]{36})"')


def _settle_factory(spec: dict[str, Any]) -> Callable[[bytes], bytes | None]:
    """For ``reserve_finalize``: the finalize request for a reserve answer (None: refused)."""
    query = spec.get("settle_query", "")

    def settle(answer: bytes) -> bytes | None:
        found = _RESERVATION_ID.search(answer)
        if found is None:
            return None
        payload = orjson.dumps(
            {
                "query": query,
                "variables": {"input": {"reservationId": found[1].decode(), "amount": 1}},
            }
        )
        return _head(spec, len(payload)) + payload

    return settle


def _ok(status: int, body: bytes, expect: bytes, count: int) -> bool:
    return status == 200 and (not expect or body.count(expect) >= count)


async def closed_loop(spec: dict[str, Any]) -> dict[str, Any]:
    body = _body_factory(spec)
    settle = _settle_factory(spec) if spec["kind"] == "reserve_finalize" else None
    expect = spec.get("expect", "").encode()
    expect_count = int(spec.get("expect_count", 1))
    timeout = float(spec.get("timeout", 10.0))
    max_requests = int(spec.get("max_requests_per_connection", 1_000_000))
    clients = int(spec["connections"])
    start = time.perf_counter()
    window_start = start + float(spec["warmup"])
    window_end = window_start + float(spec["duration"])
    latencies: list[float] = []
    counts = {"ok": 0, "errors": 0, "outside": 0, "ok_total": 0}
    first_error: list[str] = []
    cpu_at: dict[str, float] = {}

    async def mark_window() -> None:
        await asyncio.sleep(max(0.0, window_start - time.perf_counter()))
        cpu_at["start"] = _cpu_seconds()
        await asyncio.sleep(max(0.0, window_end - time.perf_counter()))
        cpu_at["end"] = _cpu_seconds()

    async def client(index: int) -> None:
        conn = Connection(spec["host"], int(spec["port"]))
        seq = 0
        try:
            while seq < max_requests and time.perf_counter() < window_end:
                data = body(index, seq)
                seq += 1
                t0 = time.perf_counter()
                try:
                    async with asyncio.timeout(timeout):
                        status, answer = await conn.request(data)
                        if settle is not None and status == 200:
                            # reserve + finalize: one operation of two dependent requests
                            follow = settle(answer)
                            if follow is None:
                                status = 0
                            else:
                                status, answer = await conn.request(follow)
                    good = _ok(status, answer, expect, expect_count)
                    if not good and not first_error:
                        first_error.append(f"HTTP {status}: {answer[:300]!r}")
                except (
                    OSError,
                    asyncio.IncompleteReadError,
                    asyncio.LimitOverrunError,
                    TimeoutError,
                    HttpError,
                    ValueError,
                ) as exc:
                    good = False
                    if not first_error:
                        first_error.append(repr(exc)[:300])
                    conn.close()
                    await asyncio.sleep(0.05)
                t1 = time.perf_counter()
                counts["ok_total"] += good
                if window_start <= t1 <= window_end:
                    if good:
                        counts["ok"] += 1
                        latencies.append(t1 - t0)
                    else:
                        counts["errors"] += 1
                else:
                    counts["outside"] += 1
        finally:
            conn.close()

    marker = asyncio.ensure_future(mark_window())
    await asyncio.gather(*(client(i) for i in range(clients)))
    await marker
    duration = float(spec["duration"])
    return {
        "ok": counts["ok"],
        "errors": counts["errors"],
        "ok_total": counts["ok_total"],
        "duration": duration,
        "throughput": counts["ok"] / duration,
        "latencies": latencies,
        "client_cpu": (cpu_at.get("end", 0.0) - cpu_at.get("start", 0.0)) / duration,
        "first_error": first_error[0] if first_error else None,
    }


async def blocks(spec: dict[str, Any]) -> dict[str, Any]:
    """Sequential requests on one connection, block by block: {"blocks": [[latency...]...]}."""
    conn = Connection(spec["host"], int(spec["port"]))
    timeout = float(spec.get("timeout", 30.0))
    deadline = time.perf_counter() + float(spec.get("deadline", 300.0))
    results: list[list[float]] = []
    errors = 0
    first_error: list[str] = []
    try:
        for block in spec["blocks"]:
            merged = {**spec, **block}
            body = _body_factory(merged)
            expect = merged.get("expect", "").encode()
            expect_count = int(merged.get("expect_count", 1))
            latencies: list[float] = []
            for seq in range(int(block["count"])):
                if time.perf_counter() > deadline:
                    raise TimeoutError("blocks deadline passed")
                data = body(0, seq)
                t0 = time.perf_counter()
                async with asyncio.timeout(timeout):
                    status, answer = await conn.request(data)
                t1 = time.perf_counter()
                if _ok(status, answer, expect, expect_count):
                    latencies.append(t1 - t0)
                else:
                    errors += 1
                    if not first_error:
                        first_error.append(f"HTTP {status}: {answer[:300]!r}")
            results.append(latencies)
    finally:
        conn.close()
    return {
        "blocks": results,
        "errors": errors,
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
    work = closed_loop if spec["mode"] == "closed" else blocks
    result = runner(work(spec))
    result["cpu"] = cpu
    with contextlib.suppress(BrokenPipeError):
        sys.stdout.write(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
