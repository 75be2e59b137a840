"""Benchmark 6: what alert evaluation costs the write path.

The same createUsageEvent load as benchmark 1 and the same createUsageEvents x100 load as
benchmark 2, on the same gateway and subscriptions, in interleaved rounds: once with no alert
defined, once with alerts on the benchmark's meter (a ``percentUsed`` alert for all customers of
the pricing model plus one ``availableBelow`` alert per customer), created through GraphQL
``createUsageAlert`` with the secret key before the round and deleted with ``deleteUsageAlert``
after it. The thresholds are low enough that every alert fires once per subscription in each
round. No webhook endpoint is defined: what is measured is the evaluation in the write
transaction (and the outbox rows of the alerts that fire), not deliveries.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING, Any

import asyncpg
import httpx

from bench import scenario, servers
from bench.stats import Row, Spread, median, percentile, ratio_fmt

if TYPE_CHECKING:
    from bench.main import Bench

MS = 1000.0

CREATE_ALERT = """mutation($input: CreateUsageAlertInput!) { createUsageAlert(input: $input) {
  __typename ... on UsageAlertCreated { alert { id } } ... on UserError { code message } } }"""
DELETE_ALERT = """mutation($input: DeleteUsageAlertInput!) { deleteUsageAlert(input: $input) {
  __typename ... on UserError { code message } } }"""

# Alerts fire when a change makes their threshold true (the crossing balance,
# gateway/storage/sql/alerts.sql), at most once per (alert, subscription, period). By the time
# 6 runs, benchmark 1 has spent every subscription's credits, so a fixed threshold would
# already be true and never fire: each customer's alert is set just below that customer's
# balance of the moment (AVAILABLE_MARGIN credits), so the round's first few events cross it
# and it fires once (one TRIGGERED in the outbox), and evaluation alone follows. The alert for
# all customers (percentUsed) is already true: it is evaluated on every event, never fired.
PERCENT_USED = 5.0
AVAILABLE_MARGIN = 5


async def alert_inputs(gql: scenario.GraphQL) -> list[dict[str, Any]]:
    """One alert for every customer of the meter's pricing model, one per dashboard customer
    (its threshold just below the customer's balance now)."""
    inputs: list[dict[str, Any]] = [
        {"usageMeterSlug": scenario.METER, "threshold": {"percentUsed": PERCENT_USED}}
    ]
    for i in range(scenario.DASHBOARD_CUSTOMERS):
        customer = f"dash-{i:03d}"
        data = await gql(scenario.USAGE_BALANCE, {"meter": scenario.METER, "customer": customer})
        available = int(data["usageBalance"]["availableBalance"])
        inputs.append(
            {
                "usageMeterSlug": scenario.METER,
                "threshold": {"availableBelow": available - AVAILABLE_MARGIN},
                "customerExternalId": customer,
            }
        )
    return inputs


ALERTS = 1 + scenario.DASHBOARD_CUSTOMERS


async def create_alerts(base_url: str, token: str) -> list[str]:
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as http:
        gql = scenario.GraphQL(http, token)
        ids = []
        for item in await alert_inputs(gql):
            data = await gql(CREATE_ALERT, {"input": item})
            ids.append(
                scenario._expect(data["createUsageAlert"], "UsageAlertCreated")["alert"]["id"]
            )
        return ids


async def delete_alerts(base_url: str, token: str, ids: list[str]) -> None:
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as http:
        gql = scenario.GraphQL(http, token)
        for alert_id in ids:
            data = await gql(DELETE_ALERT, {"input": {"alertId": alert_id}})
            scenario._expect(data["deleteUsageAlert"], "UsageAlertDeleted")


async def alert_events(database_url: str) -> dict[str, int]:
    """The alert events written (the outbox), by type: proof that the alerts were evaluated."""
    from gateway.storage.db import asyncpg_dsn

    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        rows = await conn.fetch("SELECT type, count(*) AS n FROM usage_alert_events GROUP BY type")
        return {str(r["type"]): int(r["n"]) for r in rows}
    finally:
        await conn.close()


def alert_cost(
    bench: Bench, gateway: servers.Server, sc: scenario.Scenario, database_url: str
) -> None:
    """Interleaved rounds (without, with, then with, without, ...) of a single-event and a
    batch measurement; the rows print the figure with alerts beside the one without."""
    from bench.main import Groups, log, run_loadgen

    c = bench.config
    single = bench.closed(
        gateway,
        path="/graphql",
        token=sc.token,
        kind="usage_event",
        query=scenario.CREATE_USAGE_EVENT,
        expect='"UsageEventRecorded"',
        connections=c.connections,
        warmup=c.alert_warmup,
        duration=c.alert_duration,
        subscriptions=sc.dashboard_subscriptions,
    )
    batch = bench.closed(
        gateway,
        path="/graphql",
        token=sc.token,
        kind="usage_events",
        query=scenario.CREATE_USAGE_EVENTS,
        batch=c.batch_size,
        stride=c.batch_connections,
        connections=c.batch_connections,
        warmup=c.alert_warmup,
        duration=c.alert_duration,
        subscriptions=sc.dashboard_subscriptions,
        expect='"UsageEventRecorded"',
        expect_count=c.batch_size,
        timeout=30,
    )
    groups: Groups = {
        "server": lambda: [gateway.process.pid, *gateway.worker_pids],
        "postgres": bench.postgres_pids,
    }
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in ("1 off", "1 on", "2 off", "2 on")}
    alerts = ALERTS
    for r in range(c.alert_rounds):
        order = ["off", "on"] if r % 2 == 0 else ["on", "off"]
        for state in order:
            ids = asyncio.run(create_alerts(gateway.url, sc.token)) if state == "on" else []
            try:
                for figure, spec in (("1", single), ("2", batch)):
                    tag = f"b6{figure}{state}{r}-{uuid.uuid4().hex[:6]}"
                    result = run_loadgen({**spec, "run_id": tag}, groups=groups)
                    lat = result.pop("latencies")
                    result["p99"] = percentile(lat, 99)
                    if figure == "2":
                        result["throughput"] *= c.batch_size  # events per second
                    runs[f"{figure} {state}"].append(result)
                    unit = "req/s" if figure == "1" else "ev/s"
                    log(
                        f"  6 {figure} alerts {state:3s} round {r + 1}:"
                        f" {result['throughput']:,.0f} {unit}, errors {result['errors']}"
                    )
                    if result["errors"]:
                        bench.notes.append(
                            f"6 {figure} alerts {state} round {r + 1}: {result['errors']} errors,"
                            f" first: {result['first_error']}"
                        )
            finally:
                if ids:
                    asyncio.run(delete_alerts(gateway.url, sc.token, ids))
    bench.raw["6"] = runs
    _rows(bench, runs, alerts)
    fired = asyncio.run(alert_events(database_url))
    bench.notes.append(
        f"6: {alerts} alerts on {scenario.METER!r} (percentUsed {PERCENT_USED:g} for all"
        f" customers, already true; availableBelow the balance less {AVAILABLE_MARGIN} for each of"
        f" {scenario.DASHBOARD_CUSTOMERS} customers), created before each round with alerts and"
        " deleted after it, no webhook endpoint; alert events written in all: "
        + (", ".join(f"{n:,} {t}" for t, n in sorted(fired.items())) or "none")
    )


def _rows(bench: Bench, runs: dict[str, list[dict[str, Any]]], alerts: int) -> None:
    c = bench.config
    labels = {
        "1": (f"6 createUsageEvent with {alerts} alerts ({c.connections} clients)", " req/s"),
        "2": (f"6 createUsageEvents x{c.batch_size} with {alerts} alerts", " ev/s"),
    }
    for figure, (label, unit) in labels.items():
        on, off = runs[f"{figure} on"], runs[f"{figure} off"]
        ratio = Spread.of([x["throughput"] / y["throughput"] for x, y in zip(on, off, strict=True)])
        bench.rows.append(
            Row(
                label,
                Spread.of([x["throughput"] for x in on]).fmt(unit),
                "no alerts " + Spread.of([x["throughput"] for x in off]).fmt(unit),
                ratio_fmt(ratio),
                "",
                None,
            )
        )
        if not all("cores" in x for x in on + off):
            continue

        def per_unit(xs: list[dict[str, Any]], group: str) -> float:
            return median([x["cores"][group] / x["throughput"] for x in xs])

        digits = 2 if figure == "1" else 3
        s_on, p_on = per_unit(on, "server"), per_unit(on, "postgres")
        s_off, p_off = per_unit(off, "server"), per_unit(off, "postgres")
        per = "request" if figure == "1" else "event"
        bench.rows.append(
            Row(
                f"6 CPU per {per} with alerts: server + PostgreSQL",
                f"{s_on * MS:.{digits}f} + {p_on * MS:.{digits}f} ms",
                f"no alerts {s_off * MS:.{digits}f} + {p_off * MS:.{digits}f} ms",
                f"{(s_on + p_on) / (s_off + p_off):.2f}x",
                "",
                None,
            )
        )
        other = median([x["cores"]["other"] for x in on + off])
        bench.notes.append(
            f"6 {figure}: alerts on vs off, {c.alert_rounds} interleaved rounds of"
            f" {c.alert_duration:g} s; other processes used {other:.2f} cores (median)"
        )
