"""Migrations match the models, go down and up again, and run once when raced."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import asyncpg
from alembic import command

from gateway.storage.db import asyncpg_dsn
from gateway.storage.migrate import alembic_config, current_head, upgrade
from tests.conftest import _with_database


async def _fetchval(url: str, sql: str) -> object:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


@contextmanager
def scratch_database(server_url: str, name: str) -> Iterator[str]:
    """An empty database beside the test database, dropped afterwards."""
    asyncio.run(_fetchval(server_url, f'DROP DATABASE IF EXISTS "{name}"'))
    asyncio.run(_fetchval(server_url, f'CREATE DATABASE "{name}"'))
    try:
        yield _with_database(server_url, name)
    finally:
        asyncio.run(_fetchval(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _tables(url: str) -> object:
    return asyncio.run(
        _fetchval(
            url,
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
            " AND tablename <> 'alembic_version'",
        )
    )


def test_alembic_check_is_clean(database_url: str) -> None:
    # Raises when the models and the migrated database differ.
    command.check(alembic_config(database_url))


def test_downgrade_and_upgrade_again(database_url: str) -> None:
    with scratch_database(database_url, "gateway_migrations_roundtrip") as url:
        upgrade(url)
        assert _tables(url) == 20  # 15 of billing, 5 of alerts and webhooks
        command.downgrade(alembic_config(url), "base")
        assert _tables(url) == 0
        upgrade(url)
        assert _tables(url) == 20  # 15 of billing, 5 of alerts and webhooks
        assert current_head() == "0014"


def test_processes_starting_together_migrate_once(database_url: str) -> None:
    with scratch_database(database_url, "gateway_migrations_race") as url:
        # Separate processes, as on a real deployment (alembic's context is per process).
        code = f"from gateway.storage.migrate import upgrade; upgrade({url!r})"
        procs = [
            subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE) for _ in range(3)
        ]
        for proc in procs:
            _, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err.decode()  # no "relation already exists"
        command.check(alembic_config(url))
