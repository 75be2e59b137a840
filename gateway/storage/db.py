"""Database access: an asyncpg pool whose every statement is counted.

Each call acquires its own connection from the pool (or runs inside an explicit
``transaction()``), so concurrently resolving GraphQL fields never share a connection.
Every round trip is counted twice: in a per-request counter (a context variable, used by
tests to pin SQL round trips per operation) and in the Prometheus counter
``gateway_db_queries_total``.
"""

from __future__ import annotations

import contextvars
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson
from prometheus_client import Counter

DB_QUERIES = Counter("gateway_db_queries_total", "SQL statements sent to the database")


@dataclass
class QueryCounter:
    """Round trips made on behalf of one request (or one test block)."""

    count: int = 0
    statements: list[str] = field(default_factory=list)

    def add(self, sql: str) -> None:
        self.count += 1
        self.statements.append(sql)


_current_counter: contextvars.ContextVar[QueryCounter | None] = contextvars.ContextVar(
    "query_counter", default=None
)


def start_counting() -> QueryCounter:
    counter = QueryCounter()
    _current_counter.set(counter)
    return counter


def _count(sql: str) -> None:
    DB_QUERIES.inc()
    counter = _current_counter.get()
    if counter is not None:
        counter.add(sql)


async def _init_connection(conn: asyncpg.Connection) -> None:
    for type_name in ("json", "jsonb"):
        await conn.set_type_codec(
            type_name,
            encoder=lambda v: orjson.dumps(v).decode(),
            decoder=orjson.loads,
            schema="pg_catalog",
        )


async def _keep_session(_conn: asyncpg.Connection) -> None:
    """Reset on release: nothing beyond asyncpg's own (an open transaction is rolled back).

    The gateway leaves no session state on a pooled connection (no SET, cursors, session
    advisory locks; the catalog's LISTEN connection UNLISTENs before it is released), so the
    default reset query (``SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL``)
    would only cost one more round trip per statement.
    """


def asyncpg_dsn(url: str) -> str:
    """asyncpg takes plain postgresql:// URLs; strip a SQLAlchemy driver suffix."""
    for prefix in ("postgresql+asyncpg://", "postgresql+psycopg://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix) :]
    return url


class Conn:
    """One connection inside a transaction; counts its statements."""

    def __init__(self, raw: asyncpg.Connection) -> None:
        self.raw = raw

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        _count(sql)
        return list(await self.raw.fetch(sql, *args))

    async def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        _count(sql)
        return await self.raw.fetchrow(sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        _count(sql)
        return await self.raw.fetchval(sql, *args)

    async def execute(self, sql: str, *args: Any) -> str:
        _count(sql)
        return str(await self.raw.execute(sql, *args))

    async def executemany(self, sql: str, args: Sequence[Sequence[Any]]) -> None:
        _count(sql)
        await self.raw.executemany(sql, args)


class Database:
    """The pool. Stateless besides the pool: several processes can share one database."""

    def __init__(self, url: str, *, min_size: int = 2, max_size: int = 10) -> None:
        self.url = asyncpg_dsn(url)
        self.min_size = min_size
        self.max_size = max_size
        self._pool: asyncpg.Pool | None = None

    async def connect(self) -> None:
        self._pool = await asyncpg.create_pool(
            self.url,
            min_size=self.min_size,
            max_size=self.max_size,
            init=_init_connection,
            reset=_keep_session,
            server_settings={"timezone": "UTC", "application_name": "billing-gateway"},
        )

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("database is not connected")
        return self._pool

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        _count(sql)
        return list(await self.pool.fetch(sql, *args))

    async def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        _count(sql)
        return await self.pool.fetchrow(sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        _count(sql)
        return await self.pool.fetchval(sql, *args)

    async def execute(self, sql: str, *args: Any) -> str:
        _count(sql)
        return str(await self.pool.execute(sql, *args))

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Conn]:
        """BEGIN ... COMMIT on one connection (two counted round trips besides the body)."""
        async with self.pool.acquire() as raw:
            tx = raw.transaction()
            _count("BEGIN")
            await tx.start()
            try:
                yield Conn(raw)
            except BaseException:
                _count("ROLLBACK")
                await tx.rollback()
                raise
            else:
                _count("COMMIT")
                await tx.commit()
