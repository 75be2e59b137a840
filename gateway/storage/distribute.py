"""Distribute the schema over a Citus cluster by customer (``billing-gateway distribute``).

Run on the coordinator after ``billing-gateway migrate``, and again after every migration
(a migration can add a table or replace a function, which then is not distributed yet). It
is idempotent: a table already placed the way this module wants, and a function already
propagated or delegated, is left alone; every action prints one line, then a summary.

- Reference tables are copied to every node. They hold what the merchant configures, read by
  requests of every customer and written rarely: each node then joins them locally.
- Distributed tables are sharded by customer, co-located with ``customers``: one customer's
  rows of every table live on the same node, so the hot path (one customer per transaction)
  runs on that node alone.
- Delegated functions are the hot path's database functions: the coordinator sends a call to
  the node that holds the customer named by one argument (Citus ``create_distributed_function``
  with ``colocate_with``), which runs it there in one round trip. Every other function of the
  SQL sources is propagated to all nodes, because delegated functions call them there.

Citus is driven through its documented SQL functions (``create_reference_table``,
``create_distributed_table``, ``create_distributed_function``) and catalog
(``pg_dist_partition``, ``pg_dist_object``); no library does this.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import asyncpg

from gateway.storage import distribution
from gateway.storage.db import asyncpg_dsn
from gateway.storage.migrate import current_head
from gateway.storage.sql_sources import sources

# What goes where is gateway.storage.distribution's (one classification for the schema, its
# tests and this command); this module only places it.

# Copied to every node: what the merchant configures (the catalog, secret keys, alert
# thresholds, webhook endpoints), read by requests of every customer and written rarely.
# Parents before children: a table's foreign keys point at tables placed before it.
REFERENCE_TABLES: tuple[str, ...] = distribution.REFERENCE

# (table, distribution column), parents before children (``customers`` first, by its id;
# every other table by its customer_id, in the shards of the same customer).
DISTRIBUTED_TABLES: tuple[tuple[str, str], ...] = tuple(distribution.CUSTOMER_SCOPED.items())
COLOCATE_WITH = "customers"

# (table, distribution column): tables distributed by a key of their own, in a co-location
# group of their own: look-ups by a merchant-given value that must be unique across all
# customers (a unique constraint of a customer's table would not include the customer).
LOOKUP_TABLES: tuple[tuple[str, str], ...] = tuple(distribution.LOOKUPS.items())

# (function, the argument that names the customer): the hot path, delegated to the node of
# that customer. A test checks the names against the migrated schema.
DELEGATED_FUNCTIONS: tuple[tuple[str, str], ...] = tuple(
    (name, distribution.ROUTING_ARGUMENT) for name in distribution.HOT_FUNCTIONS
)

NO_CITUS = (
    "distribute: this database has no citus extension (CREATE EXTENSION citus first);"
    " nothing changed"
)


class DistributeError(Exception):
    """Distribution stopped; ``lines`` say why, ``exit_code`` is the command's status."""

    def __init__(self, lines: list[str], exit_code: int) -> None:
        super().__init__("; ".join(lines))
        self.lines = lines
        self.exit_code = exit_code


@dataclass
class Summary:
    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"distribute: {len(REFERENCE_TABLES)} reference tables,"
            f" {len(DISTRIBUTED_TABLES) + len(LOOKUP_TABLES)} distributed tables,"
            f" {len(DELEGATED_FUNCTIONS)} delegated functions;"
            f" {len(self.changed)} changed, {len(self.unchanged)} already in place"
        )


def _citus_error(what: str, exc: asyncpg.PostgresError) -> DistributeError:
    lines = [f"distribute: {what} failed: {exc.message}"]
    lines += [
        f"  {label}: {text}" for label, text in (("detail", exc.detail), ("hint", exc.hint)) if text
    ]
    return DistributeError(lines, 1)


def _described(placement: str) -> str:
    return {"local": "a Citus local table", "reference": "a reference table"}.get(
        placement, placement
    )


async def _placements(conn: asyncpg.Connection) -> dict[str, str]:
    """What Citus has made of each table: 'reference', 'distributed by <column>', or 'local'
    (a Citus local table: the coordinator makes one of a table linked to a reference table
    when citus.enable_local_reference_table_foreign_keys is on)."""
    rows = await conn.fetch(
        """
        SELECT logicalrelid::regclass::text AS name,
               CASE WHEN partmethod = 'h'
                      THEN 'distributed by ' || column_to_column_name(logicalrelid, partkey)
                    WHEN repmodel = 't' THEN 'reference'
                    ELSE 'local' END AS placement
          FROM pg_dist_partition
        """
    )
    return {r["name"]: r["placement"] for r in rows}


async def _functions(conn: asyncpg.Connection, names: list[str]) -> dict[str, list[asyncpg.Record]]:
    rows = await conn.fetch(
        """
        SELECT p.proname AS name, p.oid::regprocedure::text AS signature,
               coalesce(p.proargnames, '{}') AS arg_names,
               d.objid IS NOT NULL AS propagated, d.distribution_argument_index AS arg_index,
               d.colocationid
          FROM pg_proc p
          JOIN pg_namespace n ON n.oid = p.pronamespace AND n.nspname = 'public'
          LEFT JOIN pg_catalog.pg_dist_object d
            ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid
         WHERE p.proname = ANY ($1::text[])
         ORDER BY p.proname, p.oid
        """,
        names,
    )
    found: dict[str, list[asyncpg.Record]] = {}
    for row in rows:
        found.setdefault(row["name"], []).append(row)
    return found


async def _preflight(conn: asyncpg.Connection) -> None:
    """Refuse before changing anything when the schema is not the one this module places."""
    version = None
    if await conn.fetchval("SELECT to_regclass('public.alembic_version') IS NOT NULL"):
        version = await conn.fetchval("SELECT version_num FROM alembic_version")
    if version != current_head():
        raise DistributeError(
            [
                f"distribute: the database is at migration {version or 'none'}, not"
                f" {current_head()} (run billing-gateway migrate first); nothing changed"
            ],
            2,
        )
    problems = []
    if not await conn.fetchval("SELECT EXISTS (SELECT FROM pg_dist_node WHERE groupid = 0)"):
        # Reference tables then have no copy on the coordinator, whose copy of api_keys is the
        # one that announces a key's revocation (storage/sql/credentials.sql).
        problems.append(
            "distribute: the coordinator is not in the cluster's metadata (SELECT"
            " citus_set_coordinator_host('<its host>', <its port>) first)"
        )
    columns = {
        (r["table_name"], r["column_name"])
        for r in await conn.fetch(
            "SELECT table_name::text, column_name::text FROM information_schema.columns"
            " WHERE table_schema = 'public'"
        )
    }
    tables = {t for t, _ in columns}
    for table in REFERENCE_TABLES:
        if table not in tables:
            problems.append(f"distribute: table {table} does not exist")
    for table, column in (*DISTRIBUTED_TABLES, *LOOKUP_TABLES):
        if (table, column) not in columns:
            problems.append(f"distribute: table {table} has no column {column}")
    # A table Citus already holds another way is left to the operator: converting it here
    # (undistribute, redistribute) would move its data and, for a Citus local table, drop
    # the functions that take its row type.
    wanted = dict.fromkeys(REFERENCE_TABLES, "reference") | {
        t: f"distributed by {c}" for t, c in (*DISTRIBUTED_TABLES, *LOOKUP_TABLES)
    }
    for table, placement in (await _placements(conn)).items():
        if table in wanted and placement != wanted[table]:
            problems.append(
                f"distribute: table {table} is already {_described(placement)}, not"
                f" {_described(wanted[table])} (undistribute_table it first)"
            )
    functions = await _functions(conn, [name for name, _ in DELEGATED_FUNCTIONS])
    for name, arg in DELEGATED_FUNCTIONS:
        overloads = functions.get(name, [])
        if len(overloads) != 1:
            problems.append(f"distribute: {len(overloads)} functions named {name}, not one")
        elif arg not in overloads[0]["arg_names"]:
            problems.append(
                f"distribute: function {overloads[0]['signature']} has no argument {arg}"
            )
    if problems:
        raise DistributeError([*problems, "distribute: nothing changed"], 1)


async def _step(conn: asyncpg.Connection, what: str, sql: str, *args: object) -> None:
    try:
        await conn.execute(sql, *args)
    except asyncpg.PostgresError as exc:
        raise _citus_error(what, exc) from exc


async def _place_tables(
    conn: asyncpg.Connection, emit: Callable[[str], None], summary: Summary
) -> None:
    placements = await _placements(conn)
    for table in REFERENCE_TABLES:
        if placements.get(table) == "reference":
            summary.unchanged.append(table)
            emit(f"{table}: reference table (already)")
            continue
        await _step(
            conn,
            f"{table}: create_reference_table",
            "SELECT create_reference_table($1::text::regclass)",
            table,
        )
        summary.changed.append(table)
        emit(f"{table}: reference table (created)")
    lookups = dict(LOOKUP_TABLES)
    for table, column in (*DISTRIBUTED_TABLES, *LOOKUP_TABLES):
        if placements.get(table) == f"distributed by {column}":
            summary.unchanged.append(table)
            emit(f"{table}: distributed by {column} (already)")
            continue
        if table in lookups:
            colocate = "none"
        else:
            colocate = "default" if table == COLOCATE_WITH else COLOCATE_WITH
        await _step(
            conn,
            f"{table}: create_distributed_table by {column}",
            "SELECT create_distributed_table($1::text::regclass, $2, colocate_with := $3)",
            table,
            column,
            colocate,
        )
        summary.changed.append(table)
        emit(f"{table}: distributed by {column} (created)")


async def _place_functions(
    conn: asyncpg.Connection, emit: Callable[[str], None], summary: Summary
) -> None:
    colocation = await conn.fetchval(
        "SELECT colocationid FROM pg_dist_partition WHERE logicalrelid = $1::regclass",
        COLOCATE_WITH,
    )
    delegated = dict(DELEGATED_FUNCTIONS)
    functions = await _functions(conn, sorted(sources()))
    for name in sorted(functions):
        for fn in functions[name]:
            signature = fn["signature"]
            if name in delegated:
                arg = delegated[name]
                index = list(fn["arg_names"]).index(arg)
                if fn["arg_index"] == index and fn["colocationid"] == colocation:
                    summary.unchanged.append(signature)
                    emit(f"{signature}: delegated by {arg} (already)")
                    continue
                await _step(
                    conn,
                    f"{signature}: create_distributed_function by {arg}",
                    "SELECT create_distributed_function($1::text::regprocedure, $2,"
                    " colocate_with := $3)",
                    signature,
                    arg,
                    COLOCATE_WITH,
                )
                summary.changed.append(signature)
                emit(f"{signature}: delegated by {arg} (created)")
            elif fn["propagated"]:
                summary.unchanged.append(signature)
                emit(f"{signature}: on every node (already)")
            else:
                await _step(
                    conn,
                    f"{signature}: create_distributed_function",
                    "SELECT create_distributed_function($1::text::regprocedure)",
                    signature,
                )
                summary.changed.append(signature)
                emit(f"{signature}: on every node (created)")


async def distribute(url: str, emit: Callable[[str], None]) -> Summary:
    """Place every table and function of the schema on the Citus cluster whose coordinator is
    at ``url``. Raises DistributeError (nothing changed when its exit code is 2)."""
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        if not await conn.fetchval(
            "SELECT EXISTS (SELECT FROM pg_extension WHERE extname = 'citus')"
        ):
            raise DistributeError([NO_CITUS], 2)
        await _preflight(conn)
        # Off, a reference table linked by foreign keys to plain tables leaves them plain. On
        # (Citus's default), the coordinator turns each linked table into a "Citus local
        # table": its data moves to a renamed shard, which the functions taking the table's
        # row type (usage_events, usage_reservations) then follow, and converting it to a
        # distributed table afterwards drops that shard and those functions with it.
        await conn.execute("SET citus.enable_local_reference_table_foreign_keys = off")
        # The credential triggers (storage/sql/credentials.sql, on api_keys and customers)
        # announce a revocation by NOTIFY. Citus refuses to place a table with triggers unless
        # told they are safe; they are: each runs on the shard the row is on, reads nothing
        # but the row, and only NOTIFYs, on the node of that shard (a reference table's on
        # every node), which is why the gateway listens on every node
        # (GATEWAY_LISTEN_DATABASE_URLS). Session-local: a later migration that changes a
        # trigger of these tables needs it on too (docs/operations.md).
        await conn.execute("SET citus.enable_unsafe_triggers = on")
        summary = Summary()
        await _place_tables(conn, emit, summary)
        await _place_functions(conn, emit, summary)
        return summary
    finally:
        await conn.close()
