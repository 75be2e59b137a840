"""`bench/run --compare DIR`: figures 1 to 5 also for the gateway of another checkout.

DIR is another checkout of the project (the commit before a change, say), with its own source
tree and migrations. Its gateway runs from its own code: every command of it is
``python -m gateway.cli ...`` with the working directory DIR and DIR first on PYTHONPATH, and
the bench checks in a subprocess that ``gateway`` is imported from DIR. It gets a fresh
database of its own on the same PostgreSQL server, migrated by its own ``gateway.cli
migrate``, a secret key from its own ``gateway.cli keys create``, and the data of
``scenario.setup`` through its own GraphQL API (the history of 3 by its own
``bench/scenario.py``, whose SQL matches its schema). Its rounds are interleaved with this tree's
(and the baselines', as without --compare), and each figure is printed after / before with
the ratio computed per round: "not worse by more than 5%" is a ratio >= 0.95 for a rate,
<= 1.05 for a latency or a cost.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg

from bench import scenario, servers
from bench.stats import Row, Spread, median, ratio_fmt

if TYPE_CHECKING:
    from bench.main import Bench, Config

MS = 1000.0
MB = 1024 * 1024
WORSE_BY = 0.05  # how much worse a figure may get (the single-node rule: 5%)
HEADER = ("Figure", "After (this tree)", "Before (--compare)", "Ratio after/before", "Limit", "Met")


@dataclass
class Other:
    """The gateway of the other checkout, running, with its own database and data."""

    source: Path
    commit: str
    gateway_file: str
    database_url: str
    server: servers.Server
    scenario: scenario.Scenario


def checkout(path: Path) -> Path:
    """The other checkout's root, after checking it is one and not this tree."""
    source = path.resolve()
    if not (source / "gateway" / "cli.py").is_file():
        raise SystemExit(f"--compare {path}: not a checkout of the gateway (no gateway/cli.py)")
    if source == servers.REPO:
        raise SystemExit(f"--compare {path}: that is this checkout")
    return source


def _run(source: Path, args: list[str], env: dict[str, str] | None = None) -> str:
    """`python ARGS` on the other checkout's code (cwd and PYTHONPATH first: DIR)."""
    environment = {**os.environ, **(env or {}), "PYTHONPATH": f"{source}{os.pathsep}{servers.REPO}"}
    done = subprocess.run(
        [sys.executable, *args],
        cwd=source,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"python {' '.join(args)} in {source} failed:\n{done.stdout[-1500:]}{done.stderr[-3000:]}"
        )
    return done.stdout


def imported_from(source: Path) -> str:
    """Where the other checkout's processes import `gateway` from; it must be DIR."""
    found = _run(source, ["-c", "import gateway; print(gateway.__file__)"]).strip()
    if not Path(found).resolve().is_relative_to(source):
        raise SystemExit(f"--compare {source}: its processes import gateway from {found}")
    return found


def _commit(source: Path) -> str:
    done = subprocess.run(
        ["git", "-C", str(source), "log", "-1", "--format=%h %s"],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        return "not a git checkout"
    line = done.stdout.strip()
    return line if len(line) <= 70 else line[:67] + "..."


async def _value(url: str, sql: str) -> Any:
    from gateway.storage.db import asyncpg_dsn

    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


@contextlib.contextmanager
def start(
    source: Path, db: servers.Database, config: Config, bench: Bench, log: Callable[[str], None]
) -> Iterator[Other]:
    """The other checkout's gateway on its own database, migrated and set up by its code."""
    gateway_file = imported_from(source)
    with servers.sibling_database(db, "before") as url:
        env = servers.server_env(url, db.workdir / "before")
        log(f"  {source}: gateway.cli migrate")
        _run(source, ["-m", "gateway.cli", "migrate"], env)
        key = _run(source, ["-m", "gateway.cli", "keys", "create", "--name", "bench"], env)
        with servers.server(
            "before",
            servers.gateway_command(config.workers),
            env,
            config.workers,
            db.workdir,
            source=source,
        ) as server:
            sc = asyncio.run(scenario.setup(server.url, url, token=key.strip().splitlines()[-1]))
            other = Other(source, _commit(source), gateway_file, url, server, sc)
            after_at = asyncio.run(_value(db.url, "SELECT version_num FROM alembic_version"))
            before_at = asyncio.run(_value(url, "SELECT version_num FROM alembic_version"))
            bench.notes.append(
                f"compare: before = {source} ({other.commit}); its processes import gateway"
                f" from {gateway_file}; its database is at migration {before_at}, this"
                f" tree's at {after_at}; data set up through its own GraphQL API (its history for 3 by"
                " its own bench/scenario.py); 6 and 7 are measured for this tree only"
            )
            bench.raw["compare"] = {"source": str(source), "commit": other.commit}
            yield other


def ratio_row(
    figure: str,
    after: list[float],
    before: list[float],
    unit: str,
    digits: int = 0,
    scale: float = 1.0,
    higher_is_better: bool = True,
) -> Row:
    """After beside before; the ratio per round (both measured back to back), its median."""
    ratios = Spread.of([a / b for a, b in zip(after, before, strict=True)])
    if higher_is_better:
        limit, met = f">= {1 - WORSE_BY:.2f}x", ratios.median >= 1 - WORSE_BY
    else:
        limit, met = f"<= {1 + WORSE_BY:.2f}x", ratios.median <= 1 + WORSE_BY
    return Row(
        figure,
        Spread.of(after).fmt(unit, digits, scale),
        Spread.of(before).fmt(unit, digits, scale),
        ratio_fmt(ratios),
        limit,
        met,
    )


def _cpu(runs: list[dict[str, Any]], per: Callable[[dict[str, Any]], float]) -> list[float]:
    """CPU seconds of the server processes and PostgreSQL per request (or event) of each run."""
    return [(x["cores"]["server"] + x["cores"]["postgres"]) / per(x) for x in runs]


def usage_event_rows(bench: Bench, runs: dict[str, list[dict[str, Any]]], other: Other) -> None:
    g, o = runs["gateway"], runs["before"]
    name = "1 createUsageEvent"
    bench.compared += [
        ratio_row(
            f"{name} throughput",
            [x["throughput"] for x in g],
            [x["throughput"] for x in o],
            " req/s",
        ),
        ratio_row(
            f"{name} p50 latency", [x["p50"] for x in g], [x["p50"] for x in o], " ms", 1, MS, False
        ),
        ratio_row(
            f"{name} p99 latency", [x["p99"] for x in g], [x["p99"] for x in o], " ms", 1, MS, False
        ),
    ]
    if all("cores" in x for x in g + o):
        bench.compared.append(
            ratio_row(
                f"{name} CPU per request: server + PostgreSQL",
                _cpu(g, lambda x: x["throughput"]),
                _cpu(o, lambda x: x["throughput"]),
                " ms",
                3,
                MS,
                False,
            )
        )
        cores = {
            k: median([x["cores"][k] for x in o]) for k in ("server", "postgres", "client", "other")
        }
        bench.notes.append(
            f"1 before: cores used (median of rounds): server {cores['server']:.2f},"
            f" PostgreSQL {cores['postgres']:.2f}, load generator {cores['client']:.2f},"
            f" other processes {cores['other']:.2f}"
        )
    after = [x for x in bench.raw["5"]["vmhwm"] if x is not None]
    before = [x for x in map(servers.peak_rss, other.server.worker_pids) if x is not None]
    if after and before:
        bench.compared.append(
            Row(
                "5 peak RSS of one gateway worker (under 1)",
                f"{max(after) / MB:,.0f} MB",
                f"{max(before) / MB:,.0f} MB",
                f"{max(after) / max(before):.2f}x",
                "",
                None,
            )
        )


async def check_writes(bench: Bench, other: Other) -> None:
    """Every answered createUsageEvent of the other gateway wrote exactly one event."""
    rows = await _value(
        other.database_url, "SELECT count(*) FROM usage_events WHERE transaction_id LIKE 'b1o%'"
    )
    answered = sum(x["ok_total"] for x in bench.raw["1"]["before"])
    bench.notes.append(f"1 before: {answered:,} successful answers in all, {rows:,} events written")


def usage_events_rows(
    bench: Bench,
    after: list[float],
    before: list[float],
    after_cores: list[dict[str, float]],
    before_cores: list[dict[str, float]],
) -> None:
    size = bench.config.batch_size
    bench.compared.append(
        ratio_row(f"2 createUsageEvents x{size} events/s", after, before, " ev/s")
    )
    if len(after_cores) == len(after) and len(before_cores) == len(before):
        bench.compared.append(
            ratio_row(
                "2 CPU per event: server + PostgreSQL",
                [
                    (c["server"] + c["postgres"]) / e
                    for c, e in zip(after_cores, after, strict=True)
                ],
                [
                    (c["server"] + c["postgres"]) / e
                    for c, e in zip(before_cores, before, strict=True)
                ],
                " ms",
                3,
                MS,
                False,
            )
        )


def _blocks(
    bench: Bench, server: servers.Server, token: str, query: str, blocks: list[dict[str, Any]]
) -> list[list[float]]:
    """Latencies of sequential requests in blocks (bench.loadgen's "blocks" mode)."""
    from bench.main import run_loadgen

    result = run_loadgen(
        {
            "mode": "blocks",
            "host": "127.0.0.1",
            "port": server.port,
            "cpu": bench.cpu,
            "path": "/graphql",
            "token": token,
            "query": query,
            "blocks": blocks,
            "deadline": 120,
        }
    )
    if result["errors"]:
        bench.notes.append(
            f"compare, {server.name}: {result['errors']} errors, first: {result['first_error']}"
        )
    return list(result["blocks"])


def dashboard(bench: Bench, gateway: servers.Server, sc: scenario.Scenario, other: Other) -> None:
    """4: the dashboard's median latency in alternating blocks, and its SQL round trips."""
    from bench.main import metrics_round_trips

    c = bench.config
    n = scenario.DASHBOARD_CUSTOMERS
    blocks: dict[str, list[list[float]]] = {"after": [], "before": []}
    targets = {"after": (gateway, sc), "before": (other.server, other.scenario)}
    for i in range(c.dashboard_blocks):
        for name in ("after", "before") if i % 2 == 0 else ("before", "after"):
            server, data = targets[name]
            block = {
                "count": c.dashboard_per_block,
                "kind": "static",
                "variables": {"first": n},
                "expect": '"externalId"',
                "expect_count": n,
            }
            blocks[name] += _blocks(bench, server, data.token, scenario.DASHBOARD, [block])
    ratios = Spread.of(
        [median(a) / median(b) for a, b in zip(blocks["after"], blocks["before"], strict=True)]
    )
    after = median([x for blk in blocks["after"] for x in blk])
    before = median([x for blk in blocks["before"] for x in blk])
    bench.compared.append(
        Row(
            f"4 dashboard ({n} customers) median latency",
            f"{after * MS:.1f} ms",
            f"{before * MS:.1f} ms",
            f"{after / before:.2f}x ({ratios.low:.2f}-{ratios.high:.2f})",
            f"<= {1 + WORSE_BY:.2f}x",
            after / before <= 1 + WORSE_BY,
        )
    )
    trips_after = metrics_round_trips(gateway.url, sc)
    trips_before = metrics_round_trips(other.server.url, other.scenario)
    if trips_after is None or trips_before is None:
        bench.notes.append("4 compare: a gateway has no gateway_db_queries_total on /metrics")
        return
    for case, value in trips_after.items():
        if case in trips_before:
            bench.compared.append(
                Row(
                    f"4 SQL round trips per request: {case}",
                    f"{value:g}",
                    f"{trips_before[case]:g}",
                    f"{value / trips_before[case]:.2f}x" if trips_before[case] else "",
                    "no more",
                    value <= trips_before[case],
                )
            )
    bench.raw["compare"]["4"] = {"blocks": blocks, "round_trips": [trips_after, trips_before]}


MAKE_HISTORY = """import asyncio, sys
from bench.scenario import make_history
print(asyncio.run(make_history(sys.argv[1], sys.argv[2], int(sys.argv[3]))))"""


def balance(bench: Bench, gateway: servers.Server, sc: scenario.Scenario, other: Other) -> None:
    """3: usageBalance latency over both histories, in alternating blocks. The other tree's
    history is written by its own bench/scenario.py (its SQL matches its schema)."""
    c = bench.config
    sizes = {"hist-small": c.history_small, "hist-large": c.history_large}
    made = []
    try:
        for name, count in sizes.items():
            sub = other.scenario.history_customers[name]
            out = _run(other.source, ["-c", MAKE_HISTORY, other.database_url, sub, str(count)])
            written = asyncio.run(
                _value(
                    other.database_url,
                    f"SELECT count(*) FROM usage_events WHERE subscription_id = '{sub}'",
                )
            )
            made.append(f"{name} {written:,} events in {float(out.split()[-1]):.1f} s")
    except RuntimeError as exc:
        bench.notes.append(f"3 compare: no history for before (its bench/scenario.py): {exc}")
        return
    bench.notes.append("3 before: history by its own bench/scenario.py: " + ", ".join(made))
    blocks: dict[str, dict[str, list[list[float]]]] = {
        "after": {name: [] for name in sizes},
        "before": {name: [] for name in sizes},
    }
    targets = {"after": (gateway, sc), "before": (other.server, other.scenario)}
    for i in range(c.balance_blocks):
        for side in ("after", "before") if i % 2 == 0 else ("before", "after"):
            server, data = targets[side]
            found = _blocks(
                bench,
                server,
                data.token,
                scenario.USAGE_BALANCE,
                [
                    {
                        "count": c.balance_per_block,
                        "kind": "static",
                        "expect": '"availableBalance"',
                        "variables": {"meter": scenario.METER, "customer": name},
                    }
                    for name in sizes
                ],
            )
            for name, block in zip(sizes, found, strict=True):
                blocks[side][name].append(block)
    for name, count in sizes.items():
        a, b = blocks["after"][name], blocks["before"][name]
        ratios = Spread.of([median(x) / median(y) for x, y in zip(a, b, strict=True)])
        after = median([x for blk in a for x in blk])
        before = median([x for blk in b for x in blk])
        bench.compared.append(
            Row(
                f"3 usageBalance median, {count:,} events",
                f"{after * MS:.2f} ms",
                f"{before * MS:.2f} ms",
                f"{after / before:.2f}x ({ratios.low:.2f}-{ratios.high:.2f})",
                f"<= {1 + WORSE_BY:.2f}x",
                after / before <= 1 + WORSE_BY,
            )
        )
    bench.raw["compare"]["3"] = blocks
