"""Migrations match the models, and go down and up again."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import asyncpg
from alembic import command

from gateway.db import asyncpg_dsn
from gateway.migrate import alembic_config, current_head, upgrade
from tests.conftest import _with_database


def test_alembic_check_is_clean(database_url: str) -> None:
    # Raises when the models and the migrated database differ.
    command.check(alembic_config(database_url))


def test_downgrade_and_upgrade_again(database_url: str) -> None:
    name = "gateway_migrations_roundtrip"
    url = _with_database(database_url, name)

    async def admin(sql: str) -> object:
        conn = await asyncpg.connect(asyncpg_dsn(database_url))
        try:
            return await conn.fetchval(sql)
        finally:
            await conn.close()

    async def tables() -> object:
        conn = await asyncpg.connect(asyncpg_dsn(url))
        try:
            return await conn.fetchval(
                "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
                " AND tablename <> 'alembic_version'"
            )
        finally:
            await conn.close()

    asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}"'))
    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        upgrade(url)
        assert asyncio.run(tables()) == 14
        command.downgrade(alembic_config(url), "base")
        assert asyncio.run(tables()) == 0
        upgrade(url)
        assert asyncio.run(tables()) == 14
        assert current_head() == "0001"
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def test_processes_starting_together_migrate_once(database_url: str) -> None:
    name = "gateway_migrations_race"
    url = _with_database(database_url, name)

    async def admin(sql: str) -> object:
        conn = await asyncpg.connect(asyncpg_dsn(database_url))
        try:
            return await conn.fetchval(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}"'))
    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        # Separate processes, as on a real deployment (alembic's context is per process).
        code = f"from gateway.migrate import upgrade; upgrade({url!r})"
        procs = [
            subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE) for _ in range(3)
        ]
        for proc in procs:
            _, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err.decode()  # no "relation already exists"
        command.check(alembic_config(url))
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
