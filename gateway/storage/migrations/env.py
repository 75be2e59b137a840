"""Alembic environment: runs migrations over an async (asyncpg) engine."""

from __future__ import annotations

import asyncio

from alembic import context
from alembic_utils.replaceable_entity import register_entities
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from gateway.storage import alert_tables  # noqa: F401  (its tables join the metadata)
from gateway.storage.migrate import sqlalchemy_url
from gateway.storage.models import metadata
from gateway.storage.sql_sources import entities

# The database functions: autogenerate and `alembic check` compare them with their sources.
register_entities(entities())

config = context.config
target_metadata = metadata


def _url() -> str:
    url = config.attributes.get("database_url")
    if url is None:
        from gateway.settings import get_settings
        from gateway.storage.embedded import resolve_database_url

        settings = get_settings()
        url, server = resolve_database_url(settings.database_url, settings.gateway_data_dir)
        config.attributes["embedded_server"] = server
    return sqlalchemy_url(url)


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


# Several processes may start on one unmigrated database at once: the first to take this
# transaction-level lock migrates, the others wait and then find nothing left to do.
MIGRATION_LOCK = 7_406_912_331


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
    with context.begin_transaction():
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        context.run_migrations()


async def run_migrations_online() -> None:
    engine = create_async_engine(_url())
    async with engine.connect() as connection:
        await connection.run_sync(_run)
    await engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    asyncio.run(run_migrations_online())
