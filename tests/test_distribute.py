"""`billing-gateway distribute`: placing the schema on a Citus cluster by customer.

On plain PostgreSQL (the suite's database) the command refuses with one line and changes
nothing. Against a real Citus coordinator (GATEWAY_TEST_CITUS_URL, a database with the citus
extension on the coordinator and its workers) it migrates, distributes, and distributes again
without changing anything; without that variable the Citus test is skipped.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from gateway.storage import alert_tables  # noqa: F401  (its tables join the metadata)
from gateway.storage.db import Database, asyncpg_dsn
from gateway.storage.distribute import (
    DELEGATED_FUNCTIONS,
    DISTRIBUTED_TABLES,
    LOOKUP_TABLES,
    NO_CITUS,
    REFERENCE_TABLES,
)
from gateway.storage.distribution import HOT_FUNCTIONS, ROUTING_ARGUMENT
from gateway.storage.models import metadata
from gateway.storage.sql_sources import sources

ROOT = Path(__file__).parent.parent
CITUS_URL = os.environ.get("GATEWAY_TEST_CITUS_URL")


def _cli(*args: str, database_url: str) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "OTEL_", "DATABASE"))
    }
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        cwd=ROOT,
        env={**clean, "DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


SCHEMA_STATE = """
SELECT (SELECT array_agg(extname ORDER BY extname) FROM pg_extension),
       (SELECT array_agg(relname || ':' || relkind::text ORDER BY relname) FROM pg_class c
          JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'public'),
       (SELECT array_agg(p.oid::regprocedure::text ORDER BY 1) FROM pg_proc p
          JOIN pg_namespace n ON n.oid = p.pronamespace AND n.nspname = 'public')
"""


def test_every_table_is_placed_once() -> None:
    reference = list(REFERENCE_TABLES)
    distributed = [t for t, _ in (*DISTRIBUTED_TABLES, *LOOKUP_TABLES)]
    assert len(set(reference + distributed)) == len(reference) + len(distributed)
    assert sorted(reference + distributed) == sorted(metadata.tables)


async def test_delegated_functions_name_their_customer_argument(db: Database) -> None:
    """The table of hot functions matches the migrated schema: one function of each name,
    with the named argument, of the distribution column's type (uuid)."""
    for name, arg in DELEGATED_FUNCTIONS:
        rows = await db.fetch(
            "SELECT p.proargnames, p.proargtypes::regtype[]::text[] AS types FROM pg_proc p"
            " JOIN pg_namespace n ON n.oid = p.pronamespace AND n.nspname = 'public'"
            " WHERE p.proname = $1",
            name,
        )
        assert len(rows) == 1, name
        names, types = list(rows[0]["proargnames"]), list(rows[0]["types"])
        assert arg in names, (name, names)
        assert types[names.index(arg)] == "uuid", (name, arg)


async def test_every_function_taking_the_customer_first_is_delegated(db: Database) -> None:
    """The hot functions are exactly the SQL sources' functions whose first argument is the
    customer: a new one is delegated by adding it to distribution.HOT_FUNCTIONS."""
    rows = await db.fetch(
        "SELECT p.proname FROM pg_proc p"
        " JOIN pg_namespace n ON n.oid = p.pronamespace AND n.nspname = 'public'"
        " WHERE p.proname = ANY ($1::text[]) AND (p.proargnames)[1] = $2"
        "   AND p.proargtypes[0] = 'uuid'::regtype",
        sorted(sources()),
        ROUTING_ARGUMENT,
    )
    assert sorted(r["proname"] for r in rows) == sorted(HOT_FUNCTIONS)
    assert [name for name, _ in DELEGATED_FUNCTIONS] == list(HOT_FUNCTIONS)


async def test_plain_postgresql_is_refused_and_nothing_changes(
    db: Database, database_url: str
) -> None:
    before = await db.fetchrow(SCHEMA_STATE)
    proc = _cli("distribute", database_url=database_url)
    assert (proc.returncode, proc.stdout, proc.stderr) == (2, "", NO_CITUS + "\n")
    after = await db.fetchrow(SCHEMA_STATE)
    assert "citus" not in after[0]
    assert tuple(after) == tuple(before)


def test_distribute_without_database_url() -> None:
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "OTEL_", "DATABASE"))
    }
    proc = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "distribute"],
        cwd=ROOT,
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (proc.returncode, proc.stdout, proc.stderr) == (
        2,
        "",
        "distribute: DATABASE_URL is not set (point it at the Citus coordinator); nothing"
        " changed\n",
    )


@pytest.mark.skipif(
    not CITUS_URL,
    reason="needs a Citus coordinator: set GATEWAY_TEST_CITUS_URL to a database with the citus"
    " extension on the coordinator and its workers",
)
async def test_migrate_and_distribute_twice_on_citus() -> None:
    assert CITUS_URL is not None
    migrated = _cli("migrate", database_url=CITUS_URL)
    assert (migrated.returncode, migrated.stderr) == (0, "")
    first = _cli("distribute", database_url=CITUS_URL)
    assert (first.returncode, first.stderr) == (0, ""), first.stderr
    second = _cli("distribute", database_url=CITUS_URL)
    assert (second.returncode, second.stderr) == (0, ""), second.stderr
    lines = second.stdout.splitlines()
    assert all(line.endswith("(already)") for line in lines[:-1]), lines
    assert lines[-1].endswith(f"; 0 changed, {len(lines) - 1} already in place")

    conn = await asyncpg.connect(asyncpg_dsn(CITUS_URL))
    try:
        placed = {
            r["name"]: (r["partmethod"], r["column"])
            for r in await conn.fetch(
                "SELECT logicalrelid::regclass::text AS name, partmethod::text,"
                " column_to_column_name(logicalrelid, partkey) AS column FROM pg_dist_partition"
            )
        }
        expected = dict.fromkeys(REFERENCE_TABLES, ("n", None)) | {
            t: ("h", c) for t, c in (*DISTRIBUTED_TABLES, *LOOKUP_TABLES)
        }
        assert placed == expected
        colocations = await conn.fetchval(
            "SELECT count(DISTINCT colocationid) FROM pg_dist_partition"
            " WHERE logicalrelid::regclass::text = ANY ($1::text[])",
            [t for t, _ in DISTRIBUTED_TABLES],
        )
        assert colocations == 1
        for name, arg in DELEGATED_FUNCTIONS:
            row = await conn.fetchrow(
                "SELECT p.proargnames, d.distribution_argument_index AS arg_index,"
                " d.colocationid = (SELECT colocationid FROM pg_dist_partition"
                "  WHERE logicalrelid = 'customers'::regclass) AS colocated"
                " FROM pg_proc p JOIN pg_catalog.pg_dist_object d"
                "   ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid"
                " WHERE p.proname = $1",
                name,
            )
            assert row is not None, name
            assert (row["arg_index"], row["colocated"]) == (
                list(row["proargnames"]).index(arg),
                True,
            ), name

        # A key's revocation (a reference table: every node's copy in one two-phase
        # transaction) commits, and the coordinator's copy announces it.
        heard: list[str] = []
        await conn.add_listener("gateway_credentials", lambda *a: heard.append(a[3]))
        await conn.execute(
            "INSERT INTO api_keys (name, prefix, key_hash) VALUES ('t', 'sk_t', $1)", "ab" * 32
        )
        revoked = await conn.execute(
            "UPDATE api_keys SET revoked_at = now() WHERE key_hash = $1", "ab" * 32
        )
        assert revoked == "UPDATE 1"
        await conn.execute("DELETE FROM api_keys WHERE key_hash = $1", "ab" * 32)
        for _ in range(100):
            if len(heard) == 2:
                break
            await asyncio.sleep(0.02)
        assert heard == ["key:" + "ab" * 32] * 2
    finally:
        await conn.close()
