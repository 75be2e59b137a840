"""`python -m bench` (or bench/run): every figure of the benchmark suite, with its baseline.

See bench/README.md for what each figure means. In short: a fresh database (embedded
PostgreSQL in a temporary directory unless DATABASE_URL is set), the gateway started the way
it is deployed (``billing-gateway serve --workers N``), the baseline under the same uvicorn
options, data set up through the GraphQL API, and a load generator in its own process pinned
to one core. Baselines are measured in the same run, interleaved with the measured figure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil  # type: ignore[import-untyped, unused-ignore]
import uuid_utils

from bench import alerts, batch_cost, compare, scenario, servers, soak
from bench.stats import Row, Spread, median, percentile, ratio_fmt, table

MS = 1000.0
MB = 1024 * 1024


@dataclass(frozen=True)
class Config:
    workers: int = 2
    rounds: int = 3
    connections: int = 64
    warmup: float = 3.0
    duration: float = 12.0
    batch_size: int = 100
    batch_connections: int = 4
    batch_warmup: float = 2.0
    batch_duration: float = 10.0
    history_small: int = 1_000
    history_large: int = 1_000_000
    balance_blocks: int = 10
    balance_per_block: int = 50
    dashboard_blocks: int = 6
    dashboard_per_block: int = 10
    verify_history: bool = True
    alert_rounds: int = 4
    alert_warmup: float = 2.0
    alert_duration: float = 6.0
    soak_rate: float = 220.0
    soak_read_every: int = 11
    soak_connections: int = 32
    soak_warmup: float = 30.0


FULL = Config(rounds=5, warmup=2.0, duration=8.0, batch_duration=8.0)
QUICK = Config(
    rounds=2,
    warmup=1.5,
    duration=4.0,
    batch_warmup=1.0,
    batch_duration=4.0,
    history_large=100_000,
    balance_blocks=4,
    balance_per_block=30,
    dashboard_blocks=3,
    dashboard_per_block=5,
    verify_history=False,
    alert_rounds=2,
    alert_warmup=1.0,
    alert_duration=3.0,
    soak_warmup=10.0,
)


def log(message: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def load_cpu() -> int:
    """The core the load generator is pinned to: the last one this process may use."""
    return sorted(os.sched_getaffinity(0))[-1]


Groups = dict[str, Callable[[], list[int]]]


def _cpu_snapshot(groups: Groups) -> dict[str, Any]:
    """CPU seconds so far: per process of each group, and busy time of the whole machine."""
    per_group: dict[str, dict[int, float]] = {}
    for name, pids in groups.items():
        times: dict[int, float] = {}
        for pid in pids():
            with contextlib.suppress(psutil.Error):
                t = psutil.Process(pid).cpu_times()
                times[pid] = t.user + t.system
        per_group[name] = times
    t = psutil.cpu_times()
    busy = t.user + t.nice + t.system + getattr(t, "irq", 0) + getattr(t, "softirq", 0)
    busy += getattr(t, "steal", 0)
    return {"at": time.monotonic(), "groups": per_group, "busy": busy}


def _cpu_used(start: dict[str, Any], end: dict[str, Any]) -> dict[str, float]:
    """Cores used in the window by each group, by the whole machine, and by everything else."""
    seconds = end["at"] - start["at"]
    used: dict[str, float] = {}
    for name, times in end["groups"].items():
        before = start["groups"].get(name, {})
        used[name] = sum(v - before.get(pid, 0.0) for pid, v in times.items()) / seconds
    used["machine"] = (end["busy"] - start["busy"]) / seconds
    used["other"] = max(0.0, used["machine"] - sum(v for k, v in used.items() if k != "machine"))
    return used


def run_loadgen(
    spec: dict[str, Any],
    watch: list[int] | None = None,
    profile: Callable[[], Any] | None = None,
    groups: Groups | None = None,
) -> dict[str, Any]:
    """Run the load generator process; sample the RSS of `watch` pids while it runs, and the
    CPU used by each group of processes (and the load generator) in the measured window."""
    warmup = float(spec.get("warmup", 0))
    window = float(spec.get("duration", 0))
    budget = warmup + window + float(spec.get("deadline", 0)) + 60
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.loadgen"],
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
        all_groups: Groups = {**(groups or {}), "client": lambda: [proc.pid]}
        profiler = profile() if profile is not None else None
        peak = 0
        snapshots: list[dict[str, Any]] = []
        while proc.poll() is None:
            elapsed = time.monotonic() - started
            if groups is not None and len(snapshots) == 0 and elapsed >= warmup:
                snapshots.append(_cpu_snapshot(all_groups))
            if groups is not None and len(snapshots) == 1 and elapsed >= warmup + window:
                snapshots.append(_cpu_snapshot(all_groups))
            for pid in watch or []:
                with contextlib.suppress(psutil.Error):
                    peak = max(peak, psutil.Process(pid).memory_info().rss)
            if elapsed > budget:
                proc.kill()
                proc.wait()
                raise RuntimeError("load generator overran its time budget")
            time.sleep(0.05)
        if profiler is not None:
            profiler.wait(timeout=60)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise RuntimeError(f"load generator failed: {err.read().decode()[-3000:]}")
        result: dict[str, Any] = json.loads(out.read())
    result["rss_peak"] = peak
    if len(snapshots) == 2:
        result["cores"] = _cpu_used(*snapshots)
    return result


class Bench:
    def __init__(
        self,
        config: Config,
        profile_dir: Path | None,
        postgres_pids: Callable[[], list[int]] = list,
    ) -> None:
        self.config = config
        self.postgres_pids = postgres_pids
        self.profile_dir = profile_dir
        self.rows: list[Row] = []
        self.compared: list[Row] = []  # after / before, with --compare
        self.notes: list[str] = []
        self.raw: dict[str, Any] = {}
        self.cpu = load_cpu()

    # ---------------------------------------------------------------- helpers

    def closed(self, server: servers.Server, **spec: Any) -> dict[str, Any]:
        return {
            "mode": "closed",
            "host": "127.0.0.1",
            "port": server.port,
            "cpu": self.cpu,
            "meter": scenario.METER,
            **spec,
        }

    def profiler(
        self, server: servers.Server, name: str, seconds: float
    ) -> Callable[[], Any] | None:
        if self.profile_dir is None:
            return None
        pyspy = Path(sys.executable).with_name("py-spy")
        if not pyspy.exists():
            self.notes.append("--profile: py-spy is not installed (pip install py-spy)")
            return None
        self.profile_dir.mkdir(parents=True, exist_ok=True)
        pid = server.worker_pids[0]

        def start() -> subprocess.Popen[bytes]:
            # The flame graph, and the same samples' collapsed stacks (one line per stack, for
            # reading per-frame shares with a script); py-spy writes one format per recording.
            # --gil: only a thread holding the GIL is sampled. Without it about half of the
            # samples were waits that py-spy did not see as idle: uvicorn's supervisor thread
            # blocked in recv() and the event loop between callbacks. py-spy samples wall
            # time: asyncpg's _do_execute (a write() to PostgreSQL) still shows far above its
            # CPU; perf, which samples CPU, puts uvloop and asyncpg's protocol at about 2% of
            # the worker's CPU under bench 2 (bench/RESULTS.md, "2026-12-07 evening").
            out = self.profile_dir / f"{name}.svg"  # type: ignore[operator]
            raw = self.profile_dir / f"{name}.txt"  # type: ignore[operator]
            command = [
                str(pyspy),
                "record",
                "--pid",
                str(pid),
                "--duration",
                str(int(seconds)),
                "--rate",
                "200",
                "--nonblocking",
                "--gil",
            ]
            subprocess.Popen(
                [*command, "--format", "raw", "--output", str(raw)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            return subprocess.Popen(
                [*command, "--output", str(out)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )

        self.notes.append(f"profile of one worker: {self.profile_dir / (name + '.svg')}")
        return start

    # ---------------------------------------------------------------- 1 and 5

    def usage_event(
        self,
        gateway: servers.Server,
        baseline: servers.Server,
        sc: scenario.Scenario,
        other: compare.Other | None = None,
    ) -> None:
        c = self.config
        common = {
            "connections": c.connections,
            "warmup": c.warmup,
            "duration": c.duration,
            "subscriptions": sc.dashboard_subscriptions,
        }
        specs = {
            "gateway": self.closed(
                gateway,
                path="/graphql",
                token=sc.token,
                kind="usage_event",
                query=scenario.CREATE_USAGE_EVENT,
                expect='"UsageEventRecorded"',
                **common,
            ),
            "baseline": self.closed(
                baseline, path="/event", kind="baseline_event", expect='"ok"', **common
            ),
        }
        targets = {"gateway": gateway, "baseline": baseline}
        if other is not None:  # the other checkout's gateway, between the two
            specs["before"] = {
                **specs["gateway"],
                "port": other.server.port,
                "token": other.scenario.token,
                "subscriptions": other.scenario.dashboard_subscriptions,
            }
            targets["before"] = other.server
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in specs}
        idle_rss = max(psutil.Process(p).memory_info().rss for p in gateway.worker_pids)
        for r in range(c.rounds):
            order = ["baseline", "gateway"] if r % 2 == 0 else ["gateway", "baseline"]
            if other is not None:
                order.insert(1, "before")
            for name in order:
                tag = {"before": "o"}.get(name, name[0])
                spec = {**specs[name], "run_id": f"b1{tag}{r}-{uuid.uuid4().hex[:6]}"}
                is_gateway = name == "gateway"
                profile = (
                    self.profiler(gateway, "1-createUsageEvent", c.duration)
                    if is_gateway and r == c.rounds - 1
                    else None
                )
                server = targets[name]
                groups: Groups = {
                    "server": lambda s=server: [s.process.pid, *s.worker_pids],  # type: ignore[misc]
                    "postgres": self.postgres_pids,
                }
                statements = scrape_db_queries(gateway.url) if is_gateway else None
                result = run_loadgen(
                    spec,
                    watch=gateway.worker_pids if is_gateway else None,
                    profile=profile,
                    groups=groups,
                )
                if statements is not None:
                    after = scrape_db_queries(gateway.url)
                    result["statements"] = None if after is None else after - statements
                lat = result.pop("latencies")
                result["p50"] = percentile(lat, 50)
                result["p99"] = percentile(lat, 99)
                runs[name].append(result)
                log(
                    f"  1 {name:8s} round {r + 1}: {result['throughput']:,.0f} req/s,"
                    f" p50 {result['p50'] * MS:.1f} ms, p99 {result['p99'] * MS:.1f} ms,"
                    f" errors {result['errors']}, client cpu {result['client_cpu']:.0%}"
                )
                if result["errors"]:
                    self.notes.append(
                        f"1 {name} round {r + 1}: {result['errors']} errors,"
                        f" first: {result['first_error']}"
                    )
        self.raw["1"] = runs
        g, b = runs["gateway"], runs["baseline"]
        tput = Spread.of([x["throughput"] for x in g])
        base = Spread.of([x["throughput"] for x in b])
        ratio = Spread.of([x["throughput"] / y["throughput"] for x, y in zip(g, b, strict=True)])
        self.rows.append(
            Row(
                "1 createUsageEvent throughput (64 clients)",
                tput.fmt(" req/s"),
                base.fmt(" req/s"),
                ratio_fmt(ratio),
                ">= 0.80x",
                ratio.median >= 0.8,
            )
        )
        p50 = Spread.of([x["p50"] for x in g])
        bp50 = Spread.of([x["p50"] for x in b])
        self.rows.append(
            Row(
                "1 createUsageEvent p50 latency",
                p50.fmt(" ms", 1, MS),
                bp50.fmt(" ms", 1, MS),
                ratio_fmt(Spread.of([x["p50"] / y["p50"] for x, y in zip(g, b, strict=True)])),
                "",
                None,
            )
        )
        p99 = Spread.of([x["p99"] for x in g])
        bp99 = Spread.of([x["p99"] for x in b])
        self.rows.append(
            Row(
                "1 createUsageEvent p99 latency",
                p99.fmt(" ms", 1, MS),
                bp99.fmt(" ms", 1, MS),
                ratio_fmt(Spread.of([x["p99"] / y["p99"] for x, y in zip(g, b, strict=True)])),
                "<= 50 ms",
                p99.median <= 0.050,
            )
        )
        self.cpu_rows("1", g, b, below_ms=0.6)
        sent = [x["statements"] for x in g if x.get("statements")]
        if len(sent) == len(g):
            # With the key cache warm a request sends no statement of its own: the statements
            # are group-committed batches and events sent alone (gateway.billing.group_commit),
            # and the few of the workers' background tasks.
            per = Spread.of([x["ok_total"] / n for x, n in zip(g, sent, strict=True)])
            self.notes.append(
                f"1 gateway: {per.fmt('', 1)} events per SQL statement (group commit; from"
                " gateway_db_queries_total on /metrics, warm-up included)"
            )
        else:
            self.notes.append(
                "1 gateway: events per SQL statement not known (no gateway_db_queries_total on"
                " /metrics, or a round with none)"
            )
        cpu = Spread.of([x["client_cpu"] for x in g + b])
        self.notes.append(
            f"1: load generator pinned to CPU {self.cpu}, busy {cpu.fmt('', 2)} of that core"
            " (1.00 would mean the client, not the server, is the limit)"
        )
        self.notes.append(
            f"1: gateway and baseline run {self.config.workers} worker processes each; the"
            " gateway's rate limiter is off (GATEWAY_RATE_LIMIT_PER_MINUTE="
            f"{servers.server_env('', Path('.'))['GATEWAY_RATE_LIMIT_PER_MINUTE']})"
        )
        # 5: memory of one gateway worker under benchmark 1.
        hwm = [servers.peak_rss(p) for p in gateway.worker_pids]
        sampled = max(x["rss_peak"] for x in g)
        peak = max([h for h in hwm if h is not None] or [sampled])
        self.rows.append(
            Row(
                "5 peak RSS of one gateway worker (under 1)",
                f"{peak / MB:,.0f} MB",
                f"idle {idle_rss / MB:,.0f} MB",
                "",
                "< 250 MB",
                peak < 250 * MB,
            )
        )
        self.raw["5"] = {"vmhwm": hwm, "sampled_peak": sampled, "idle": idle_rss}
        if other is not None:
            compare.usage_event_rows(self, runs, other)
        self.lone_event(specs, other)

    def lone_event(self, specs: dict[str, dict[str, Any]], other: compare.Other | None) -> None:
        """1 at one client: a lone request's latency (group commit must not delay it)."""
        c = self.config
        duration = min(c.duration, 4.0)
        lat: dict[str, list[float]] = {name: [] for name in specs}
        for r in range(c.rounds):
            names = list(specs) if r % 2 == 0 else list(reversed(specs))
            for name in names:
                spec = {
                    **specs[name],
                    "connections": 1,
                    "warmup": 1.0,
                    "duration": duration,
                    "run_id": f"b1l{name[0]}{r}-{uuid.uuid4().hex[:6]}",
                }
                result = run_loadgen(spec)
                lat[name].append(percentile(result.pop("latencies"), 50))
                log(f"  1 {name:8s} 1 client round {r + 1}: p50 {lat[name][-1] * MS:.2f} ms")
        g, b = lat["gateway"], lat["baseline"]
        self.rows.append(
            Row(
                "1 createUsageEvent p50 latency at 1 client",
                Spread.of(g).fmt(" ms", 2, MS),
                Spread.of(b).fmt(" ms", 2, MS),
                ratio_fmt(Spread.of([x / y for x, y in zip(g, b, strict=True)])),
                "",
                None,
            )
        )
        if other is not None:
            self.compared.append(
                compare.ratio_row(
                    "1 createUsageEvent p50 latency at 1 client",
                    g,
                    lat["before"],
                    " ms",
                    2,
                    MS,
                    False,
                )
            )

    def reserve_finalize(
        self, gateway: servers.Server, sc: scenario.Scenario, other: compare.Other | None = None
    ) -> None:
        """1b: reserveUsage then finalizeUsageReservation per operation, beside 1."""
        c = self.config
        asyncio.run(scenario.fund_reservations(gateway.url, sc.token, sc.dashboard_subscriptions))
        if other is not None:
            asyncio.run(
                scenario.fund_reservations(
                    other.server.url, other.scenario.token, other.scenario.dashboard_subscriptions
                )
            )
        spec = self.closed(
            gateway,
            path="/graphql",
            token=sc.token,
            kind="reserve_finalize",
            query=scenario.RESERVE_USAGE,
            settle_query=scenario.FINALIZE_USAGE,
            expect='"UsageEventRecorded"',
            connections=c.connections,
            warmup=c.warmup,
            duration=c.duration,
            subscriptions=sc.dashboard_subscriptions,
        )
        before_runs: list[float] = []
        runs = []
        for r in range(c.rounds):
            if other is not None:  # the other checkout's gateway, first and last in turn
                before_spec = {
                    **spec,
                    "port": other.server.port,
                    "token": other.scenario.token,
                    "subscriptions": other.scenario.dashboard_subscriptions,
                }
                if r % 2 == 0:
                    before_spec["run_id"] = f"b1ro{r}-{uuid.uuid4().hex[:6]}"
                    before_runs.append(run_loadgen(before_spec)["throughput"])
            result = run_loadgen({**spec, "run_id": f"b1r{r}-{uuid.uuid4().hex[:6]}"})
            if other is not None and r % 2 == 1:
                before_spec["run_id"] = f"b1ro{r}-{uuid.uuid4().hex[:6]}"
                before_runs.append(run_loadgen(before_spec)["throughput"])
            lat = result.pop("latencies")
            result["p50"] = percentile(lat, 50)
            result["p99"] = percentile(lat, 99)
            runs.append(result)
            log(
                f"  1 reserve+finalize round {r + 1}: {result['throughput']:,.0f} op/s,"
                f" p50 {result['p50'] * MS:.1f} ms, p99 {result['p99'] * MS:.1f} ms,"
                f" errors {result['errors']}"
            )
            if result["errors"]:
                self.notes.append(
                    f"1 reserve+finalize round {r + 1}: {result['errors']} errors,"
                    f" first: {result['first_error']}"
                )
        self.raw["1 reserve+finalize"] = runs
        events = [x["throughput"] for x in self.raw.get("1", {}).get("gateway", [])]
        tput = Spread.of([x["throughput"] for x in runs])
        self.rows.append(
            Row(
                "1 reserve + finalize throughput (64 clients, 2 requests each)",
                tput.fmt(" op/s"),
                Spread.of(events).fmt(" req/s") + " createUsageEvent" if events else "",
                ratio_fmt(
                    Spread.of(
                        [
                            x / y
                            for x, y in zip([r["throughput"] for r in runs], events, strict=False)
                        ]
                    )
                )
                if events
                else "",
                "",
                None,
            )
        )
        if other is not None:
            self.compared.append(
                compare.ratio_row(
                    "1 reserve + finalize throughput (64 clients)",
                    [x["throughput"] for x in runs],
                    before_runs,
                    " op/s",
                )
            )

    def cpu_rows(
        self,
        figure: str,
        g: list[dict[str, Any]],
        b: list[dict[str, Any]],
        below_ms: float | None = None,
    ) -> None:
        """CPU per request (server processes, PostgreSQL) and the cores each group used;
        ``below_ms``: the target for the sum (judged only when PostgreSQL's CPU is measured)."""
        if not all("cores" in x for x in g + b):
            return

        def per_request(runs: list[dict[str, Any]], group: str) -> Spread:
            return Spread.of([x["cores"][group] / x["throughput"] for x in runs])

        gs, gp = per_request(g, "server"), per_request(g, "postgres")
        bs, bp = per_request(b, "server"), per_request(b, "postgres")
        self.rows.append(
            Row(
                f"{figure} CPU per request: server + PostgreSQL",
                f"{gs.median * MS:.2f} + {gp.median * MS:.2f} ms",
                f"{bs.median * MS:.2f} + {bp.median * MS:.2f} ms",
                f"{(gs.median + gp.median) / (bs.median + bp.median):.2f}x",
                "" if below_ms is None else f"< {below_ms} ms",
                None
                if below_ms is None or not gp.median
                else (gs.median + gp.median) * MS < below_ms,
            )
        )
        if not gp.median:
            self.notes.append(
                f"{figure}: PostgreSQL is not embedded: its CPU is not measured"
                " (it counts as 'other')"
            )
        for name, runs in (("gateway", g), ("baseline", b)):
            cores = {
                k: median([x["cores"][k] for x in runs])
                for k in ("server", "postgres", "client", "other", "machine")
            }
            self.notes.append(
                f"{figure} {name}: cores used (median of rounds): server {cores['server']:.2f},"
                f" PostgreSQL {cores['postgres']:.2f}, load generator {cores['client']:.2f},"
                f" other processes {cores['other']:.2f}, machine {cores['machine']:.2f}"
                f" of {os.cpu_count()}"
            )

    async def check_writes(self, database_url: str) -> None:
        """Every answered createUsageEvent wrote exactly one event."""
        conn = await asyncpg.connect(database_url)
        try:
            for name, prefix in (("gateway", "b1g"), ("baseline", "b1b")):
                rows = await conn.fetchval(
                    "SELECT count(*) FROM usage_events WHERE transaction_id LIKE $1", prefix + "%"
                )
                answered = sum(x["ok_total"] for x in self.raw["1"][name])
                self.notes.append(
                    f"1 {name}: {answered:,} successful answers in all, {rows:,} events written"
                )
        finally:
            await conn.close()

    # ---------------------------------------------------------------- 2

    def usage_events(
        self,
        gateway: servers.Server,
        sc: scenario.Scenario,
        database_url: str,
        other: compare.Other | None = None,
    ) -> None:
        c = self.config
        spec = self.closed(
            gateway,
            path="/graphql",
            token=sc.token,
            kind="usage_events",
            query=scenario.CREATE_USAGE_EVENTS,
            batch=c.batch_size,
            stride=c.batch_connections,
            connections=c.batch_connections,
            warmup=c.batch_warmup,
            duration=c.batch_duration,
            subscriptions=sc.dashboard_subscriptions,
            expect='"UsageEventRecorded"',
            expect_count=c.batch_size,
            timeout=30,
        )
        g: list[float] = []
        b: list[float] = []
        copy: list[float] = []
        lat: list[dict[str, float]] = []
        cores: list[dict[str, float]] = []
        before: list[float] = []
        before_cores: list[dict[str, float]] = []

        def measure_before(r: int) -> None:
            assert other is not None
            server = other.server
            result = run_loadgen(
                {
                    **spec,
                    "port": server.port,
                    "token": other.scenario.token,
                    "subscriptions": other.scenario.dashboard_subscriptions,
                    "run_id": f"b2o{r}-{uuid.uuid4().hex[:6]}",
                },
                groups={
                    "server": lambda: [server.process.pid, *server.worker_pids],
                    "postgres": self.postgres_pids,
                },
            )
            result.pop("latencies")
            before.append(result["throughput"] * c.batch_size)
            if "cores" in result:
                before_cores.append(result["cores"])
            if result["errors"]:
                self.notes.append(
                    f"2 before round {r + 1}: {result['errors']} errors,"
                    f" first: {result['first_error']}"
                )
            log(f"  2 round {r + 1}: before {before[-1]:,.0f} events/s")

        for r in range(c.rounds):
            if other is not None and r % 2 == 1:  # before, after; then after, before; ...
                measure_before(r)
            profile = (
                self.profiler(gateway, "2-createUsageEvents", c.batch_duration)
                if r == c.rounds - 1
                else None
            )
            groups: Groups = {
                "server": lambda: [gateway.process.pid, *gateway.worker_pids],
                "postgres": self.postgres_pids,
            }
            result = run_loadgen(
                {**spec, "run_id": f"b2g{r}-{uuid.uuid4().hex[:6]}"}, profile=profile, groups=groups
            )
            if "cores" in result:
                cores.append(result["cores"])
            if other is not None and r % 2 == 0:
                measure_before(r)
            latencies = result.pop("latencies")
            events = result["throughput"] * c.batch_size
            g.append(events)
            lat.append({"p50": percentile(latencies, 50), "p99": percentile(latencies, 99)})
            if result["errors"]:
                self.notes.append(
                    f"2 round {r + 1}: {result['errors']} errors, first: {result['first_error']}"
                )
            rows, copied = asyncio.run(
                baseline_batches(
                    database_url,
                    sc.dashboard_subscriptions,
                    c.batch_connections,
                    c.batch_size,
                    c.batch_warmup,
                    c.batch_duration / 2,
                    f"b2b{r}",
                )
            )
            b.append(rows)
            copy.append(copied)
            log(
                f"  2 round {r + 1}: gateway {events:,.0f} events/s (batch p50"
                f" {lat[-1]['p50'] * MS:.0f} ms), executemany {rows:,.0f} rows/s,"
                f" COPY {copied:,.0f} rows/s"
            )
        self.raw["2"] = {"gateway": g, "executemany": b, "copy": copy, "latency": lat}
        ev = Spread.of(g)
        ratio = Spread.of([x / y for x, y in zip(g, b, strict=True)])
        self.rows.append(
            Row(
                f"2 createUsageEvents x{c.batch_size} ({c.batch_connections} clients)",
                ev.fmt(" ev/s"),
                Spread.of(b).fmt(" rows/s"),
                ratio_fmt(ratio),
                ">= 25,000/s, >= 0.60x",
                ev.median >= 25_000 and ratio.median >= 0.6,
            )
        )
        self.rows.append(
            Row(
                "2 createUsageEvents batch latency p50 / p99",
                f"{median([x['p50'] for x in lat]) * MS:,.0f} /"
                f" {median([x['p99'] for x in lat]) * MS:,.0f} ms",
                "",
                "",
                "",
                None,
            )
        )
        if cores:
            server = median([x["server"] / e for x, e in zip(cores, g, strict=False)])
            pg = median([x["postgres"] / e for x, e in zip(cores, g, strict=False)])
            self.rows.append(
                Row(
                    "2 CPU per event: server + PostgreSQL",
                    f"{server * MS:.3f} + {pg * MS:.3f} ms",
                    "",
                    "",
                    "",
                    None,
                )
            )
            self.notes.append(
                "2 gateway: cores used (median of rounds): server"
                f" {median([x['server'] for x in cores]):.2f}, PostgreSQL"
                f" {median([x['postgres'] for x in cores]):.2f}, other processes"
                f" {median([x['other'] for x in cores]):.2f}"
            )
        if other is not None:
            self.raw["2"]["before"] = before
            compare.usage_events_rows(self, g, before, cores, before_cores)
        self.rows.append(
            Row(
                "2 (info) same rows by COPY, no conflict handling",
                "",
                Spread.of(copy).fmt(" rows/s"),
                ratio_fmt(Spread.of([x / y for x, y in zip(g, copy, strict=True)])),
                "",
                None,
            )
        )
        self.batch_cost(database_url, sc)
        self.batch_concurrent(database_url, sc)

    def direct(
        self,
        measure: Callable[..., Coroutine[Any, Any, dict[str, list[float]]]],
        database_url: str,
        sc: scenario.Scenario,
    ) -> dict[str, list[float]]:
        """One of bench.batch_cost's measurements, with bench 2's meter, subscriptions,
        connections and batch size."""
        from gateway.storage.db import asyncpg_dsn

        c = self.config
        return asyncio.run(
            measure(
                asyncpg_dsn(database_url),
                scenario.METER,
                sc.dashboard_subscriptions,
                c.batch_connections,
                c.batch_size,
            )
        )

    def batch_concurrent(self, database_url: str, sc: scenario.Scenario) -> None:
        """Bench 2's batches on its 4 connections without the gateway (bench.batch_cost)."""
        c = self.config
        figures = self.direct(batch_cost.concurrent, database_url, sc)
        self.raw["2"]["concurrent"] = figures
        base, batch = (figures[name] for name in batch_cost.CONCURRENT)
        self.rows.append(
            Row(
                f"2 (info) record_usage_batch() called directly, {c.batch_connections} connections",
                Spread.of(batch).fmt(" ev/s"),
                Spread.of(base).fmt(" rows/s"),
                ratio_fmt(Spread.of([x / y for x, y in zip(batch, base, strict=True)])),
                "",
                None,
            )
        )

    def group_sizes(self, database_url: str, sc: scenario.Scenario) -> None:
        """Bench 1's PostgreSQL cost per event by how many events group commit gathers into
        one statement (bench.batch_cost.group_sizes)."""
        from gateway.storage.db import asyncpg_dsn

        if not self.postgres_pids():
            self.notes.append("1 statement costs: skipped, the database's processes are not local")
            return
        figures = asyncio.run(
            batch_cost.group_sizes(
                asyncpg_dsn(database_url), scenario.METER, sc.dashboard_subscriptions
            )
        )
        self.raw["1 group sizes"] = figures
        self.cost_per_event_rows("1", figures, batch_cost.ONE_BY_ONE)
        self.notes.append(
            f"1 (info) rows: {len(figures[batch_cost.ONE_BY_ONE])} rounds of"
            f" {batch_cost.GROUP_EVENTS:,} events per figure, alternating; a batch of fewer than 3"
            " events is recorded item by item (record_usage_event()), a larger one by the steady"
            " statement"
        )

    def batch_cost(self, database_url: str, sc: scenario.Scenario) -> None:
        """Where bench 2's PostgreSQL time goes: its statements called directly (bench.batch_cost)."""
        if not self.postgres_pids():
            self.notes.append("2 statement costs: skipped, the database's processes are not local")
            return
        figures = self.direct(batch_cost.batch_cost, database_url, sc)
        self.raw["2"]["statements"] = figures
        self.cost_per_event_rows("2", figures, batch_cost.NAMES[0])

    def cost_per_event_rows(
        self, bench: str, figures: dict[str, list[float]], baseline: str
    ) -> None:
        """One row per statement of bench.batch_cost: its CPU per event beside ``baseline``'s."""
        base = figures[baseline]
        for name, values in figures.items():
            self.rows.append(
                Row(
                    f"{bench} (info) PostgreSQL CPU per event, called directly: {name}",
                    Spread.of(values).fmt(" ms", 3, MS),
                    Spread.of(base).fmt(" ms", 3, MS),
                    ratio_fmt(Spread.of([b / v for b, v in zip(base, values, strict=True)])),
                    "",
                    None,
                )
            )

    # ---------------------------------------------------------------- 3

    def balance(self, gateway: servers.Server, sc: scenario.Scenario, database_url: str) -> None:
        c = self.config
        subs = sc.history_customers
        made: dict[str, float] = {}
        for name, count in (("hist-small", c.history_small), ("hist-large", c.history_large)):
            log(f"  3 generating {count:,} events of history for {name}")
            made[name] = asyncio.run(scenario.make_history(database_url, subs[name], count))
        self.notes.append(
            f"3: history generated with set-based SQL (INSERT ... SELECT FROM generate_series,"
            f" one statement per billing period, plus usage_totals, credit grants and"
            f" meter_balances to match, then VACUUM ANALYZE): {c.history_small:,} events in"
            f" {made['hist-small']:.1f} s, {c.history_large:,} in {made['hist-large']:.1f} s"
        )
        checked = ["hist-small"] + (["hist-large"] if c.verify_history else [])
        for name in checked:
            drifts = asyncio.run(scenario.verify_history(database_url, name))
            self.notes.append(
                f"3: gateway.billing.reconcile on {name}: {len(drifts)} drifts"
                + (f", first: {drifts[0]}" if drifts else "")
            )
        blocks = []
        for _ in range(c.balance_blocks):
            for name in ("hist-small", "hist-large"):
                blocks.append(
                    {
                        "count": c.balance_per_block,
                        "kind": "static",
                        "variables": {"meter": scenario.METER, "customer": name},
                    }
                )
        result = run_loadgen(
            {
                "mode": "blocks",
                "host": "127.0.0.1",
                "port": gateway.port,
                "cpu": self.cpu,
                "path": "/graphql",
                "token": sc.token,
                "query": scenario.USAGE_BALANCE,
                "expect": '"availableBalance"',
                "blocks": blocks,
                "deadline": 240,
            }
        )
        small = result["blocks"][0::2]
        large = result["blocks"][1::2]
        small_all = [x for blk in small for x in blk]
        large_all = [x for blk in large for x in blk]
        per_block = Spread.of([median(y) / median(x) for x, y in zip(small, large, strict=True)])
        ratio = median(large_all) / median(small_all)
        self.raw["3"] = {"small": small, "large": large}
        label = f"{c.history_large:,}"
        self.rows.append(
            Row(
                f"3 usageBalance median, {c.history_small:,} events",
                f"{median(small_all) * MS:.2f} ms",
                "",
                "",
                "",
                None,
            )
        )
        self.rows.append(
            Row(
                f"3 usageBalance median, {label} events",
                f"{median(large_all) * MS:.2f} ms",
                f"{median(small_all) * MS:.2f} ms",
                f"{ratio:.2f}x ({per_block.low:.2f}-{per_block.high:.2f})",
                "<= 1.20x",
                ratio <= 1.2,
            )
        )
        sql_small, sql_large = asyncio.run(
            sql_balance_latency(
                database_url,
                subs["hist-small"],
                subs["hist-large"],
                c.balance_blocks,
                c.balance_per_block,
            )
        )
        self.rows.append(
            Row(
                f"3 (info) SQL usage_balance() median, {label} events",
                f"{sql_large * MS:.3f} ms",
                f"{sql_small * MS:.3f} ms",
                f"{sql_large / sql_small:.2f}x",
                "",
                None,
            )
        )
        if result["errors"]:
            self.notes.append(f"3: {result['errors']} errors, first: {result['first_error']}")

    # ---------------------------------------------------------------- 4

    def dashboard(
        self, gateway: servers.Server, sc: scenario.Scenario, database_url: str, workdir: Path
    ) -> None:
        c = self.config
        blocks = []
        for _ in range(c.dashboard_blocks):
            for first in (scenario.DASHBOARD_CUSTOMERS, 1):
                blocks.append(
                    {
                        "count": c.dashboard_per_block,
                        "kind": "static",
                        "variables": {"first": first},
                        "expect": '"externalId"',
                        "expect_count": first,
                    }
                )
        result = run_loadgen(
            {
                "mode": "blocks",
                "host": "127.0.0.1",
                "port": gateway.port,
                "cpu": self.cpu,
                "path": "/graphql",
                "token": sc.token,
                "query": scenario.DASHBOARD,
                "blocks": blocks,
                "deadline": 240,
            }
        )
        many = [x for blk in result["blocks"][0::2] for x in blk]
        one = [x for blk in result["blocks"][1::2] for x in blk]
        per_block = Spread.of(
            [
                median(y) / median(x)
                for x, y in zip(result["blocks"][1::2], result["blocks"][0::2], strict=True)
            ]
        )
        if result["errors"]:
            self.notes.append(f"4: {result['errors']} errors, first: {result['first_error']}")
        self.raw["4"] = {"many": many, "one": one}
        counts = asyncio.run(count_round_trips(database_url, sc, workdir))
        self.raw["round_trips"] = counts
        n = scenario.DASHBOARD_CUSTOMERS
        self.rows.append(
            Row(
                f"4 dashboard ({n} customers) median latency",
                f"{median(many) * MS:.1f} ms",
                f"1 customer {median(one) * MS:.1f} ms",
                f"{median(many) / median(one):.2f}x ({per_block.low:.2f}-{per_block.high:.2f})",
                "",
                None,
            )
        )
        scraped = metrics_round_trips(gateway.url, sc)
        self.raw["round_trips_metrics"] = scraped
        source = counts if scraped is None else scraped
        rt_many = source[f"dashboard ({n} customers)"]
        rt_one = source["dashboard (1 customer)"]
        self.rows.append(
            Row(
                f"4 dashboard ({n} customers) SQL round trips",
                f"{rt_many:g}",
                f"1 customer {rt_one:g}",
                f"{rt_many / rt_one:.2f}x",
                "no growth",
                rt_many == rt_one,
            )
        )
        self.notes.append(
            "4/info: SQL round trips per request, "
            + (
                "from gateway_db_queries_total on /metrics (summed over the workers; the"
                " least of 3 windows of 10 requests between two scrapes): "
                + ", ".join(f"{k} {v:g}" for k, v in scraped.items())
                + "; "
                if scraped
                else "(/metrics has no gateway_db_queries_total) "
            )
            + "counted in-process (gateway.storage.db.start_counting() around one request to"
            " create_app() over ASGI, catalog cache warm): "
            + ", ".join(f"{k} {v}" for k, v in counts.items())
        )


async def baseline_batches(
    database_url: str,
    subscriptions: list[str],
    connections: int,
    batch: int,
    warmup: float,
    duration: float,
    run_id: str,
) -> tuple[float, float]:
    """Rows/s of the same rows by executemany (ON CONFLICT DO NOTHING) and by COPY."""
    from bench.baseline_app import INSERT, load_targets
    from gateway.storage.db import asyncpg_dsn

    url = asyncpg_dsn(database_url)
    conns = [
        await asyncpg.connect(url, server_settings={"timezone": "UTC"}) for _ in range(connections)
    ]
    try:
        targets = await load_targets(conns[0], scenario.METER)
        ordered = [targets[s] for s in subscriptions]
        columns = [
            "id",
            "customer_id",
            "subscription_id",
            "usage_meter_id",
            "price_id",
            "billing_period_id",
            "period_start",
            "period_end",
            "amount",
            "consumed",
            "covered",
            "seq",
            "transaction_id",
            "usage_date",
        ]

        def rows(client: int, seq: int, tag: str) -> list[tuple[Any, ...]]:
            out = []
            for i in range(batch):
                customer, sub, meter, price, period, start, end = ordered[
                    (client + i * connections) % len(ordered)
                ]
                out.append(
                    (
                        uuid.UUID(bytes=uuid_utils.uuid7().bytes),
                        customer,
                        sub,
                        meter,
                        price,
                        period,
                        start,
                        end,
                        1,
                        f"{run_id}{tag}-{client}-{seq}-{i}",
                    )
                )
            return out

        async def run(use_copy: bool) -> float:
            loop = asyncio.get_running_loop()
            start = loop.time() + warmup
            end = start + duration
            done = [0]
            now = datetime.now(UTC)

            async def client(index: int) -> None:
                conn = conns[index]
                seq = 0
                while loop.time() < end and seq < 100_000:
                    data = rows(index, seq, "c" if use_copy else "e")
                    seq += 1
                    if use_copy:
                        await conn.copy_records_to_table(
                            "usage_events",
                            columns=columns,
                            records=[(*r[:8], 1, 1, 0, 0, r[9], now) for r in data],
                        )
                    else:
                        await conn.executemany(INSERT, data)
                    if start <= loop.time() <= end:
                        done[0] += batch

            await asyncio.gather(*(client(i) for i in range(connections)))
            return done[0] / duration

        return await run(False), await run(True)
    finally:
        for conn in conns:
            await conn.close()


async def sql_balance_latency(
    database_url: str, small: str, large: str, blocks: int, per_block: int
) -> tuple[float, float]:
    from gateway.storage.db import asyncpg_dsn

    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        meter = await conn.fetchval(
            "SELECT m.id FROM usage_meters m JOIN subscriptions s ON true"
            " JOIN customers c ON c.id = s.customer_id AND c.pricing_model_id = m.pricing_model_id"
            " WHERE s.id = $1 AND m.slug = $2",
            uuid.UUID(small),
            scenario.METER,
        )
        # The function takes the customer first (the schema is keyed by customer).
        owner = {
            sub: await conn.fetchval(
                "SELECT customer_id FROM subscriptions WHERE id = $1", uuid.UUID(sub)
            )
            for sub in (small, large)
        }
        statement = await conn.prepare("SELECT * FROM usage_balance($1, $2, $3)")
        times: dict[str, list[float]] = {small: [], large: []}
        for _ in range(blocks * 2):
            for sub in (small, large):
                for _ in range(per_block):
                    t0 = time.perf_counter()
                    row = await statement.fetchrow(owner[sub], uuid.UUID(sub), meter)
                    times[sub].append(time.perf_counter() - t0)
                    assert row is not None
        return median(times[small]), median(times[large])
    finally:
        await conn.close()


async def count_round_trips(
    database_url: str, sc: scenario.Scenario, workdir: Path
) -> dict[str, int]:
    """SQL round trips of one request of each kind, counted in-process."""
    from gateway.api.app import create_app
    from gateway.settings import Settings
    from gateway.storage.db import start_counting

    settings = Settings(
        database_url=database_url,
        gateway_token_secret=servers.TOKEN_SECRET,
        gateway_data_dir=workdir / "in-process",
    )
    app = create_app(settings, database_url)
    sub = sc.dashboard_subscriptions[0]

    def event(tag: str, i: int = 0) -> dict[str, Any]:
        return {
            "target": {"usageMeterSlug": scenario.METER},
            "subscriptionId": sub,
            "amount": 1,
            "transactionId": f"rt-{tag}-{i}-{uuid.uuid4().hex[:8]}",
        }

    n = scenario.DASHBOARD_CUSTOMERS
    cases: dict[str, Callable[[str], tuple[str, dict[str, Any]]]] = {
        "createUsageEvent": lambda t: (scenario.CREATE_USAGE_EVENT, {"input": event(t)}),
        "createUsageEvents x100": lambda t: (
            scenario.CREATE_USAGE_EVENTS,
            {"input": [event(t, i) for i in range(100)]},
        ),
        "usageBalance": lambda t: (
            scenario.USAGE_BALANCE,
            {"meter": scenario.METER, "customer": "dash-000"},
        ),
        f"dashboard ({n} customers)": lambda t: (scenario.DASHBOARD, {"first": n}),
        "dashboard (1 customer)": lambda t: (scenario.DASHBOARD, {"first": 1}),
    }
    counts: dict[str, int] = {}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as http:
            headers = {"Authorization": f"Bearer {sc.token}"}
            for name, make in cases.items():
                for attempt in ("warm", "count"):
                    query, variables = make(attempt)
                    counter = start_counting()
                    answer = await http.post(
                        "/graphql", headers=headers, json={"query": query, "variables": variables}
                    )
                    body = answer.json()
                    if answer.status_code != 200 or body.get("errors"):
                        raise RuntimeError(f"{name}: {body}")
                counts[name] = counter.count
    return counts


def scrape_db_queries(base_url: str) -> float | None:
    """gateway_db_queries_total from /metrics (None when it is not there)."""
    try:
        with urllib.request.urlopen(base_url + "/metrics", timeout=10) as answer:
            text = answer.read().decode()
    except OSError:
        return None
    values = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(("gateway_db_queries_total ", "gateway_db_queries_total{"))
    ]
    return sum(values) if values else None


def metrics_round_trips(
    base_url: str, sc: scenario.Scenario, repeat: int = 10, windows: int = 3
) -> dict[str, float] | None:
    """Round trips per request from the gateway's own counter: scrape, requests, scrape."""
    if scrape_db_queries(base_url) is None:
        return None
    n = scenario.DASHBOARD_CUSTOMERS
    cases = {
        "createUsageEvent": lambda i: (
            scenario.CREATE_USAGE_EVENT,
            {
                "input": {
                    "target": {"usageMeterSlug": scenario.METER},
                    "subscriptionId": sc.dashboard_subscriptions[0],
                    "amount": 1,
                    "transactionId": f"rtm-{uuid.uuid4().hex}",
                }
            },
        ),
        "usageBalance": lambda i: (
            scenario.USAGE_BALANCE,
            {"meter": scenario.METER, "customer": "dash-000"},
        ),
        f"dashboard ({n} customers)": lambda i: (scenario.DASHBOARD, {"first": n}),
        "dashboard (1 customer)": lambda i: (scenario.DASHBOARD, {"first": 1}),
    }
    found: dict[str, float] = {}
    with httpx.Client(
        base_url=base_url, timeout=60, headers={"Authorization": f"Bearer {sc.token}"}
    ) as http:
        for name, make in cases.items():
            for i in range(4):  # every worker's catalog cache warm
                http.post("/graphql", json=dict(zip(("query", "variables"), make(i), strict=True)))
            per_window: list[float] = []
            # The least of a few windows: a statement of the process's own between two scrapes
            # (a cache's periodic re-read) only adds, and would be counted as the requests'.
            for _window in range(windows):
                before = scrape_db_queries(base_url)
                for i in range(repeat):
                    query, variables = make(i)
                    answer = http.post("/graphql", json={"query": query, "variables": variables})
                    if answer.status_code != 200 or answer.json().get("errors"):
                        raise RuntimeError(f"{name}: {answer.text[:500]}")
                after = scrape_db_queries(base_url)
                if before is None or after is None:
                    return None
                per_window.append((after - before) / repeat)
            found[name] = round(min(per_window), 2)
    return found


def machine() -> dict[str, str]:
    def installed(name: str) -> bool:
        return importlib.util.find_spec(name) is not None

    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cores": str(os.cpu_count()),
        "arch": platform.machine(),
        "cpu": _cpu_model(),
        "python": platform.python_version(),
        "uvicorn loop/http": ("uvloop" if installed("uvloop") else "asyncio")
        + "/"
        + ("httptools" if installed("httptools") else "h11"),
    }


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


@contextlib.contextmanager
def stage(name: str) -> Iterator[None]:
    started = time.monotonic()
    log(f"{name} ...")
    yield
    log(f"{name}: {time.monotonic() - started:.0f} s")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="everything smaller (about 1-2 minutes; 100,000 events of history)",
    )
    parser.add_argument("--workers", type=int, help="gateway (and baseline) worker processes")
    parser.add_argument("--rounds", type=int, help="interleaved rounds of benchmarks 1 and 2")
    parser.add_argument("--duration", type=float, help="seconds measured per round of 1")
    parser.add_argument(
        "--only",
        default="1,2,3,4,6",
        help="benchmarks to run, e.g. 1 or 3,4 (5 comes with 1; 7, the soak, only when named)",
    )
    parser.add_argument(
        "--soak-minutes",
        type=float,
        help="minutes measured by the soak, 7 (default 10; 1 with --quick)",
    )
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument(
        "--compare",
        type=Path,
        metavar="DIR",
        help="also measure 1 to 5 for the gateway of another checkout (after / before)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="py-spy flame graphs of one gateway worker during 1 and 2",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = QUICK if args.quick else FULL
    for name in ("workers", "rounds", "duration"):
        if getattr(args, name) is not None:
            config = replace(config, **{name: getattr(args, name)})
    only = {part.strip() for part in args.only.split(",")}
    source = compare.checkout(args.compare) if args.compare else None
    bench = Bench(config, args.profile)  # the database's processes are set below
    info = machine()
    started = time.monotonic()
    with servers.database(log) as db:
        info["postgresql"] = db.server_version + (" (embedded)" if db.embedded else "")
        bench.postgres_pids = db.postgres_pids
        env = servers.server_env(db.url, db.workdir)
        with contextlib.ExitStack() as stack:
            with stage(f"starting the gateway ({config.workers} workers)"):
                gateway = stack.enter_context(
                    servers.server(
                        "gateway",
                        servers.gateway_command(config.workers),
                        env,
                        config.workers,
                        db.workdir,
                    )
                )
            with stage("setting up data through GraphQL"):
                sc = asyncio.run(scenario.setup(gateway.url, db.url))
            other = None
            if source is not None:
                with stage(f"starting the gateway of {source} on its own database"):
                    other = stack.enter_context(compare.start(source, db, config, bench, log))
            if "1" in only:
                baseline = stack.enter_context(
                    servers.server(
                        "baseline",
                        servers.baseline_command(config.workers),
                        {**env, "BENCH_METER": scenario.METER},
                        config.workers,
                        db.workdir,
                    )
                )
                with stage("1 createUsageEvent vs bare endpoint (and 5 memory)"):
                    bench.usage_event(gateway, baseline, sc, other)
                    asyncio.run(bench.check_writes(db.url))
                    if other is not None:
                        asyncio.run(compare.check_writes(bench, other))
                with stage("1 reserve + finalize beside createUsageEvent"):
                    bench.reserve_finalize(gateway, sc, other)
                with stage("1 group commit's statement by batch size, called directly"):
                    bench.group_sizes(db.url, sc)
            if "2" in only:
                with stage("2 createUsageEvents vs executemany"):
                    bench.usage_events(gateway, sc, db.url, other)
            if "4" in only:
                with stage("4 dashboard"):
                    bench.dashboard(gateway, sc, db.url, db.workdir)
                    if other is not None:
                        compare.dashboard(bench, gateway, sc, other)
            if "3" in only:
                with stage("3 usageBalance vs history"):
                    bench.balance(gateway, sc, db.url)
                    if other is not None:
                        compare.balance(bench, gateway, sc, other)
            if "6" in only:
                with stage("6 createUsageEvent(s) with alerts vs without"):
                    alerts.alert_cost(bench, gateway, sc, db.url)
            if "7" in only:
                minutes = args.soak_minutes or (1.0 if args.quick else 10.0)
                with stage(f"7 soak, {minutes:g} minutes"):
                    soak.soak(bench, gateway, sc, minutes)
    info["workers"] = str(config.workers)
    info["mode"] = "quick" if args.quick else "full"
    info["elapsed"] = f"{time.monotonic() - started:.0f} s"
    print(render(info, config, bench))
    if args.json:
        args.json.write_text(
            json.dumps(
                {"machine": info, "config": asdict(config), "raw": bench.raw}, indent=1, default=str
            )
        )
    return 0


def render(info: dict[str, str], config: Config, bench: Bench) -> str:
    lines = ["", "Benchmarks: " + ", ".join(f"{k} {v}" for k, v in info.items()), ""]
    lines.append(table(bench.rows))
    lines.append("")
    if bench.compared:
        lines.append(f"After (this tree) / before (--compare {bench.raw['compare']['source']}):")
        lines.append("")
        lines.append(table(bench.compared, compare.HEADER))
        lines.append("")
    lines.append(
        f"Values: median of {config.rounds} interleaved rounds (min-max in brackets) for 1"
        f" and 2 (of {config.alert_rounds} for 6); medians of all requests (per-block ratio"
        " range in brackets) for 3 and 4."
    )
    lines += [f"- {note}" for note in bench.notes]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
