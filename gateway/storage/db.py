"""Database access: an asyncpg pool whose every statement is counted.

Each call acquires its own connection from the pool (or runs inside an explicit
``transaction()``), so concurrently resolving GraphQL fields never share a connection.
Every round trip is counted twice: in a per-request counter (a context variable, used by
tests to pin SQL round trips per operation) and in the Prometheus counter
``gateway_db_queries_total``.

No statement waits without bound: the wait for a pooled connection is limited
(``acquire_timeout``, on the client: nothing was sent yet), and every pooled session carries
PostgreSQL's ``statement_timeout`` and ``lock_timeout``, enforced by the server, which rolls the
statement (and its transaction) back. Those failures, and a database that cannot be reached,
are raised as ``DatabaseUnavailable``: the request can be retried, nothing of it was written
(a connection lost while a statement ran is the one case where it may have been, which the
idempotency keys make safe to retry too).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson
from prometheus_client import Counter

from gateway.settings import Settings
from gateway.storage.isolation import KeyedLimiter
from gateway.storage.unavailable import (
    UNAVAILABLE_ERRORS,
    DatabaseUnavailable,
    unavailable,
)

DB_QUERIES = Counter("gateway_db_queries_total", "SQL statements sent to the database")
logger = logging.getLogger(__name__)


def discard_if_broken(raw: asyncpg.Connection, exc: BaseException) -> None:
    """Close a connection that failed with ``exc`` unless it is still sound.

    Timeouts (statement, lock) leave the session usable. A connection-level failure (the
    server ended the session: admin shutdown, crash, lost socket) may leave asyncpg's protocol
    waiting for a message that will never come until it notices the socket closing; released
    to the pool in that state, its next user would fail with "another operation is in
    progress". Terminated here, the pool replaces it.
    """
    if isinstance(exc, asyncpg.QueryCanceledError | asyncpg.LockNotAvailableError):
        return
    if isinstance(exc, asyncpg.InsufficientResourcesError | TimeoutError):
        return
    # Already closed, the pool may have taken it back: nothing left to terminate.
    with contextlib.suppress(asyncpg.InterfaceError):
        raw.terminate()


def _closed(raw: asyncpg.Connection) -> bool:
    try:
        return bool(raw.is_closed())
    except asyncpg.InterfaceError:  # closed, and already taken back by the pool
        return True


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
        try:
            return list(await self.raw.fetch(sql, *args))
        except UNAVAILABLE_ERRORS as exc:
            raise unavailable(exc) from exc

    async def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        _count(sql)
        try:
            return await self.raw.fetchrow(sql, *args)
        except UNAVAILABLE_ERRORS as exc:
            raise unavailable(exc) from exc

    async def fetchval(self, sql: str, *args: Any) -> Any:
        _count(sql)
        try:
            return await self.raw.fetchval(sql, *args)
        except UNAVAILABLE_ERRORS as exc:
            raise unavailable(exc) from exc

    async def execute(self, sql: str, *args: Any) -> str:
        _count(sql)
        try:
            return str(await self.raw.execute(sql, *args))
        except UNAVAILABLE_ERRORS as exc:
            raise unavailable(exc) from exc

    async def executemany(self, sql: str, args: Sequence[Sequence[Any]]) -> None:
        _count(sql)
        try:
            await self.raw.executemany(sql, args)
        except UNAVAILABLE_ERRORS as exc:
            raise unavailable(exc) from exc


async def _is_distributed(pool: asyncpg.Pool) -> bool:
    """Whether ``customers`` is a Citus distributed table (read once: a database distributed
    while the gateway runs is seen at the gateway's next start)."""
    async with pool.acquire() as raw:
        citus = "SELECT EXISTS (SELECT FROM pg_extension WHERE extname = 'citus')"
        if not await raw.fetchval(citus):
            return False
        return bool(
            await raw.fetchval(
                "SELECT EXISTS (SELECT FROM pg_dist_partition"
                " WHERE logicalrelid = to_regclass('customers'))"
            )
        )


def _milliseconds(seconds: float | None) -> str:
    return str(round((seconds or 0) * 1000))


class Database:
    """The pool. Stateless besides the pool: several processes can share one database.

    ``acquire_timeout``, ``statement_timeout``, ``lock_timeout``: seconds, None or 0 for no
    limit (see the module docstring). ``prepared_statements=False`` (behind a pooler in
    transaction mode) keeps no prepared statement across statements, and leaves the timeouts to
    the pooler's server connections (``ALTER ROLE ... SET``): such poolers refuse unknown
    start-up parameters. ``writers_per_key``: see ``KeyedLimiter`` (``self.writers``).
    """

    def __init__(
        self,
        url: str,
        *,
        min_size: int = 2,
        max_size: int = 10,
        acquire_timeout: float | None = None,
        statement_timeout: float | None = None,
        lock_timeout: float | None = None,
        prepared_statements: bool = True,
        writers_per_key: int = 2,
    ) -> None:

        self.url = asyncpg_dsn(url)
        self.min_size = min_size
        self.max_size = max_size
        self.acquire_timeout = acquire_timeout or None
        self.statement_timeout = statement_timeout
        self.lock_timeout = lock_timeout
        self.prepared_statements = prepared_statements
        # A waiter for a key's turn holds no connection: it waits as long as for one, and less
        # when the key makes no progress for the lock timeout (gateway.storage.isolation).
        self.writers = KeyedLimiter(
            writers_per_key, timeout=self.acquire_timeout, stall=lock_timeout or None
        )
        self._pool: asyncpg.Pool | None = None
        # Whether the customers' rows are distributed over a Citus cluster (read at connect):
        # then each statement must stay on one customer's shard (gateway.billing.usage).
        self.distributed = False

    def server_settings(self) -> dict[str, str]:
        settings = {"timezone": "UTC", "application_name": "billing-gateway"}
        if self.prepared_statements:
            settings["statement_timeout"] = _milliseconds(self.statement_timeout)
            settings["lock_timeout"] = _milliseconds(self.lock_timeout)
        return settings

    async def connect(self) -> None:
        self._pool = await asyncpg.create_pool(
            self.url,
            min_size=self.min_size,
            max_size=self.max_size,
            init=_init_connection,
            reset=_keep_session,
            server_settings=self.server_settings(),
            statement_cache_size=100 if self.prepared_statements else 0,
        )
        self.distributed = await _is_distributed(self._pool)

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                await pool.close()
            except UNAVAILABLE_ERRORS as exc:  # the database went away: nothing to close
                logger.warning("closing the database pool: %s", unavailable(exc))
                pool.terminate()

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("database is not connected")
        return self._pool

    async def _pooled(self, method: str, sql: str, args: tuple[Any, ...]) -> Any:
        """One statement on a pooled connection: a connection the failure left broken is
        discarded, and an outage or timeout becomes ``DatabaseUnavailable``."""
        _count(sql)
        try:
            async with self.pool.acquire(timeout=self.acquire_timeout) as raw:
                try:
                    return await getattr(raw, method)(sql, *args)
                except UNAVAILABLE_ERRORS as exc:
                    discard_if_broken(raw, exc)
                    raise
        except UNAVAILABLE_ERRORS as exc:
            raise unavailable(exc) from exc

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        return list(await self._pooled("fetch", sql, args))

    async def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        row: asyncpg.Record | None = await self._pooled("fetchrow", sql, args)
        return row

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await self._pooled("fetchval", sql, args)

    async def execute(self, sql: str, *args: Any) -> str:
        return str(await self._pooled("execute", sql, args))

    async def probe(self, sql: str, seconds: float) -> Any:
        """One statement for a health check: on a pooled connection when one is free, else
        on a connection of its own, so that a pool busy with slow requests (a stuck lock) does
        not read as an unreachable database. Raises ``DatabaseUnavailable``."""
        _count(sql)
        try:
            try:
                pooled = await self.pool.acquire(timeout=min(seconds, 0.25))
            except TimeoutError:
                pooled = None  # every pooled connection is in use
            if pooled is not None:
                try:
                    return await pooled.fetchval(sql, timeout=seconds)
                except UNAVAILABLE_ERRORS as exc:
                    discard_if_broken(pooled, exc)
                    raise
                finally:
                    await self.pool.release(pooled)
            own = await asyncpg.connect(
                self.url,
                timeout=seconds,
                statement_cache_size=0,
                server_settings=self.server_settings(),
            )
            try:
                return await own.fetchval(sql, timeout=seconds)
            finally:
                await own.close(timeout=seconds)
        except UNAVAILABLE_ERRORS as exc:
            raise unavailable(exc) from exc

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Conn]:
        """BEGIN ... COMMIT on one connection (two counted round trips besides the body)."""
        try:
            async with self.pool.acquire(timeout=self.acquire_timeout) as raw:
                tx = raw.transaction()
                _count("BEGIN")
                await tx.start()
                try:
                    yield Conn(raw)
                except BaseException as exc:
                    _count("ROLLBACK")
                    cause = exc.__cause__ if isinstance(exc, DatabaseUnavailable) else exc
                    if cause is not None and isinstance(cause, UNAVAILABLE_ERRORS):
                        discard_if_broken(raw, cause)
                    if not _closed(raw):
                        # A lost connection took the transaction with it.
                        with contextlib.suppress(*UNAVAILABLE_ERRORS):
                            await tx.rollback()
                    raise
                else:
                    _count("COMMIT")
                    await tx.commit()
        except UNAVAILABLE_ERRORS as exc:
            raise unavailable(exc) from exc


def database_from_settings(settings: Settings, url: str) -> Database:
    """The serving pool: sizes, timeouts, pooler mode and writer isolation from ``settings``."""
    return Database(
        url,
        min_size=settings.gateway_pool_min_size,
        max_size=settings.gateway_pool_max_size,
        acquire_timeout=settings.gateway_pool_acquire_timeout_seconds,
        statement_timeout=settings.gateway_statement_timeout_seconds,
        lock_timeout=settings.gateway_lock_timeout_seconds,
        prepared_statements=not settings.gateway_transaction_pooling,
        writers_per_key=settings.gateway_writers_per_meter,
    )


async def warn_without_server_timeouts(db: Database) -> None:
    """Behind a transaction-mode pooler the timeouts cannot travel as start-up parameters:
    say so, once, when the server's own settings leave them unbounded."""
    if db.prepared_statements:
        return
    row = await db.fetchrow(
        "SELECT current_setting('statement_timeout') AS statement_timeout,"
        " current_setting('lock_timeout') AS lock_timeout"
    )
    assert row is not None
    for name in ("statement_timeout", "lock_timeout"):
        if row[name] == "0":
            logger.warning(
                "%s is not set on the server's sessions: set it on the role or in the pooler"
                " (ALTER ROLE ... SET %s = '...'; see docs/operations.md, PgBouncer)",
                name,
                name,
            )
