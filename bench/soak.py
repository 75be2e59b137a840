"""Benchmark 7: a soak at a steady load, well below capacity.

An open loop (``bench.openloop``) at a fixed rate: createUsageEvent on the dashboard
subscriptions plus a usageBalance read every ``soak_read_every``-th request, for a warm-up and
then ``--soak-minutes`` minutes, against the gateway's workers. Meanwhile the bench samples the
resident set (RSS) of every worker every few seconds. Printed: the RSS of each worker at the
start of the measurement (after the warm-up) and at the end and the largest drift of any
worker from its start, the p99 latency per minute (the first, the last and the largest), and
the errors. Targets: drift <= 10 MB, p99 of the last minute <= 2x the first, no errors.
Soaks shorter than 3 minutes (``--quick``) are cut into 6 slices instead of minutes.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import uuid
from typing import TYPE_CHECKING, Any

import psutil  # type: ignore[import-untyped, unused-ignore]

from bench import scenario, servers
from bench.stats import Row

if TYPE_CHECKING:
    from bench.main import Bench, Groups

MS = 1000.0
MB = 1024 * 1024
SAMPLE_EVERY = 5.0  # seconds between two RSS samples
DRIFT_TARGET = 10 * MB
P99_GROWTH_TARGET = 2.0
CORE_GROUPS = (("server", "server"), ("postgres", "PostgreSQL"), ("other", "other"))


def _rss(pids: list[int]) -> dict[int, int]:
    found: dict[int, int] = {}
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            found[pid] = psutil.Process(pid).memory_info().rss
    return found


def run_open_loop(
    spec: dict[str, Any], workers: list[int], groups: Groups
) -> tuple[dict[str, Any], list[tuple[float, dict[int, int]]]]:
    """Run the open-loop load generator; sample the workers' RSS while it runs, and the cores
    each group of processes used after the warm-up (in result["cores"])."""
    from bench.main import _cpu_snapshot, _cpu_used

    budget = float(spec["warmup"]) + float(spec["duration"]) + float(spec["timeout"]) + 60
    samples: list[tuple[float, dict[int, int]]] = []
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.openloop"],
            stdin=subprocess.PIPE,
            stdout=out,
            stderr=err,
            cwd=servers.REPO,
            env={**os.environ, "PYTHONPATH": str(servers.REPO)},
        )
        assert proc.stdin is not None
        proc.stdin.write(json.dumps(spec).encode())
        proc.stdin.close()
        started = time.monotonic()
        next_sample = started
        all_groups: Groups = {**groups, "client": lambda: [proc.pid]}
        cpu: list[dict[str, Any]] = []
        while proc.poll() is None:
            now = time.monotonic()
            if now >= next_sample:
                samples.append((now - started, _rss(workers)))
                next_sample += SAMPLE_EVERY
                # CPU from the first sample after the warm-up to the last one inside the window
                if not cpu and now - started >= float(spec["warmup"]):
                    cpu.append(_cpu_snapshot(all_groups))
                elif cpu and now - started <= float(spec["warmup"]) + float(spec["duration"]):
                    cpu[1:] = [_cpu_snapshot(all_groups)]
            if now - started > budget:
                proc.kill()
                proc.wait()
                raise RuntimeError("soak load generator overran its time budget")
            time.sleep(0.2)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise RuntimeError(f"soak load generator failed: {err.read().decode()[-3000:]}")
        result: dict[str, Any] = json.loads(out.read())
    if len(cpu) == 2:
        result["cores"] = _cpu_used(*cpu)
    return result, samples


def soak(bench: Bench, gateway: servers.Server, sc: scenario.Scenario, minutes: float) -> None:
    from bench.main import log

    c = bench.config
    duration = minutes * 60
    interval = 60.0 if minutes >= 3 else duration / 6
    spec = {
        "host": "127.0.0.1",
        "port": gateway.port,
        "cpu": bench.cpu,
        "path": "/graphql",
        "token": sc.token,
        "meter": scenario.METER,
        "event_query": scenario.CREATE_USAGE_EVENT,
        "read_query": scenario.USAGE_BALANCE,
        "subscriptions": sc.dashboard_subscriptions,
        "customers": [f"dash-{i:03d}" for i in range(scenario.DASHBOARD_CUSTOMERS)],
        "rate": c.soak_rate,
        "read_every": c.soak_read_every,
        "connections": c.soak_connections,
        "warmup": c.soak_warmup,
        "duration": duration,
        "interval": interval,
        "timeout": 10.0,
        "run_id": f"b7-{uuid.uuid4().hex[:6]}",
    }
    workers = list(gateway.worker_pids)
    log(
        f"  7 soak: {c.soak_rate:g} req/s (every {c.soak_read_every}th a usageBalance read)"
        f" for {c.soak_warmup:g} s of warm-up + {duration:g} s, {len(workers)} workers"
    )
    groups: Groups = {
        "server": lambda: [gateway.process.pid, *gateway.worker_pids],
        "postgres": bench.postgres_pids,
    }
    result, samples = run_open_loop(spec, workers, groups)
    measured = [(t, rss) for t, rss in samples if t >= c.soak_warmup]
    bench.raw["7"] = {"result": result, "rss": samples, "spec": {**spec, "token": None}}
    if not measured:
        bench.notes.append("7: no RSS sample after the warm-up")
        return
    start, end = measured[0][1], measured[-1][1]
    drift = max(
        (abs(rss.get(pid, start[pid]) - start[pid]) for _, rss in measured for pid in start),
        default=0,
    )
    gone = [pid for pid in workers if pid not in end]
    intervals = result["intervals"]
    p99 = [x["p99"] for x in intervals]
    valid = [v for v in p99 if not math.isnan(v)]
    errors = sum(x["errors"] for x in intervals) + result["unfinished"]
    answered = sum(x["ok"] for x in intervals)
    slice_name = "minute" if interval == 60 else f"{interval:g} s"
    for i, x in enumerate(intervals):
        log(
            f"  7 {slice_name} {i + 1}: {x['ok']:,} ok, {x['errors']} errors,"
            f" p50 {x['p50'] * MS:.1f} ms, p99 {x['p99'] * MS:.1f} ms"
        )
    first, last = p99[0], p99[-1]
    growth = last / first if first and not math.isnan(first) else float("nan")
    fmt_rss = ", ".join(f"{v / MB:,.0f}" for v in start.values())
    fmt_end = ", ".join(f"{v / MB:,.0f}" for v in end.values())
    label = f"{minutes:g} min at {c.soak_rate:g} req/s"
    bench.rows += [
        Row(
            f"7 soak ({label}): worker RSS drift",
            f"{drift / MB:,.1f} MB (end {fmt_end} MB)",
            f"start {fmt_rss} MB",
            "",
            "<= 10 MB",
            drift <= DRIFT_TARGET and not gone,
        ),
        Row(
            f"7 soak: p99 per {slice_name}, last / first (max)",
            f"{last * MS:.1f} ms (max {max(valid, default=float('nan')) * MS:.1f} ms)",
            f"first {first * MS:.1f} ms",
            f"{growth:.2f}x",
            "<= 2.00x",
            growth <= P99_GROWTH_TARGET,
        ),
        Row(
            "7 soak: errors",
            f"{errors:,} of {answered + errors:,}",
            "",
            "",
            "0",
            errors == 0,
        ),
    ]
    bench.notes.append(
        f"7: open loop at {c.soak_rate:g} req/s over {c.soak_connections} connections"
        f" (every {c.soak_read_every}th request a usageBalance read), warm-up {c.soak_warmup:g} s"
        f" not measured ({result['warmup_errors']} errors in it); RSS of {len(workers)} workers"
        f" sampled every {SAMPLE_EVERY:g} s, {len(measured)} samples after the warm-up"
        f"; load generator busy {result['client_cpu']:.2f} of its core"
        + (
            "; cores used after the warm-up: "
            + ", ".join(f"{name} {result['cores'][k]:.2f}" for k, name in CORE_GROUPS)
            + f" (of {os.cpu_count()}; 'other' is everything else on the machine)"
            if "cores" in result
            else ""
        )
        + (f"; workers gone during the soak: {gone}" if gone else "")
        + (f"; first error: {result['first_error']}" if result["first_error"] else "")
    )
