"""PostgreSQL LISTEN on one connection that heals by itself.

``Listener`` owns one direct connection (not a pooled one, and not through a transaction-mode
pooler, which cannot keep a LISTEN) and keeps it alive: when the connection is lost (the
database restarted, the network failed, or a periodic ``SELECT 1`` does not answer in time) it
reconnects with exponential backoff, re-issues every ``LISTEN``, and then calls the
``on_reconnect`` callbacks, so that their owners drop whatever a notification sent while
nobody listened would have invalidated. LISTEN comes first, so nothing falls between the
two. ``connected`` says whether notifications are being received right now: a cache can
bypass itself while it is False.

Callbacks are plain functions, called on the event loop: ``on(channel, callback(payload))``
(before ``start()``) or ``await listen(channel, callback(payload))`` (any time), and
``on_reconnect(callback())``. An exception in a callback is logged and does not stop the
listener. ``stop()`` closes the connection (which ends its LISTENs server-side), whatever its
state; it never calls ``remove_listener`` on a dead connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from typing import Any, Protocol

import asyncpg

from gateway.storage.db import asyncpg_dsn
from gateway.storage.unavailable import UNAVAILABLE_ERRORS, unavailable

logger = logging.getLogger(__name__)

# Besides the unavailable ones, a refusal by the server (wrong password, no such database)
# is retried too: it may be fixed while the process runs.
_CONNECTION_ERRORS = (*UNAVAILABLE_ERRORS, asyncpg.PostgresError, asyncpg.InterfaceError)
Payload = Callable[[str], None]
Hook = Callable[[], None]


class Listening(Protocol):
    """What the caches and the live hub use of a listener: ``Listener`` (one database) or
    ``gateway.storage.listeners.Listeners`` (every node of a Citus cluster)."""

    @property
    def connected(self) -> bool: ...

    def on(self, channel: str, callback: Payload) -> None: ...

    async def listen(self, channel: str, callback: Payload) -> None: ...

    def on_reconnect(self, callback: Hook) -> None: ...


class Listener:
    """LISTEN on a supervised connection (see the module docstring)."""

    def __init__(
        self,
        url: str,
        *,
        initial_backoff: float = 0.05,
        max_backoff: float = 1.0,
        check_interval: float = 5.0,
        check_timeout: float = 2.0,
        connect_timeout: float = 5.0,
        application_name: str = "billing-gateway-listener",
    ) -> None:
        self.url = asyncpg_dsn(url)
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.check_interval = check_interval
        self.check_timeout = check_timeout
        self.connect_timeout = connect_timeout
        self.application_name = application_name
        self._channels: dict[str, list[Payload]] = {}
        self._on_reconnect: list[Hook] = []
        self._conn: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._using = asyncio.Lock()  # one operation at a time on the connection
        self._stopping = False
        self.connections = 0  # how many times a connection was established (for tests)

    @property
    def connected(self) -> bool:
        conn = self._conn
        return conn is not None and not conn.is_closed()

    def on(self, channel: str, callback: Payload) -> None:
        """Call ``callback(payload)`` for every notification on ``channel``.

        Register before ``start()``; a channel added later is listened to from the next
        (re)connection on."""
        self._channels.setdefault(channel, []).append(callback)

    async def listen(self, channel: str, callback: Payload) -> None:
        """``on()``, and LISTEN at once when connected (else on the next connection)."""
        new = channel not in self._channels
        self.on(channel, callback)
        conn = self._conn
        if not new or conn is None or conn.is_closed():
            return
        try:
            async with self._using:
                await conn.add_listener(channel, self._dispatch)
        except _CONNECTION_ERRORS as exc:
            # The supervisor reconnects, and LISTENs to every channel.
            logger.warning("listener: LISTEN %s failed: %s", channel, _reason(exc))
            conn.terminate()

    def on_reconnect(self, callback: Hook) -> None:
        """Call ``callback()`` after every re-established connection (not the first one)."""
        self._on_reconnect.append(callback)

    async def start(self, wait: float | None = None) -> None:
        """Start supervising; with ``wait``, wait up to that many seconds for the first
        connection (it keeps trying in the background either way)."""
        if self._task is None:
            self._stopping = False
            self._task = asyncio.create_task(self._run(), name="postgres-listener")
        if wait:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._ready.wait()

    async def stop(self) -> None:
        self._stopping = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._close()

    # -- the supervisor -------------------------------------------------------------------

    async def _run(self) -> None:
        delay = self.initial_backoff
        first = True
        failing = False
        while not self._stopping:
            try:
                conn = await self._connect()
            except _CONNECTION_ERRORS as exc:
                if not failing:  # one line per outage, not one per attempt
                    logger.warning("listener: cannot connect, retrying: %s", _reason(exc))
                    failing = True
                # Full jitter: processes that lost the database together do not reconnect in
                # lockstep.
                await asyncio.sleep(random.uniform(delay / 2, delay))
                delay = min(delay * 2, self.max_backoff)
                continue
            delay = self.initial_backoff
            failing = False
            self.connections += 1
            self._conn = conn
            self._ready.set()
            if not first:
                logger.info("listener: reconnected, channels %s", sorted(self._channels))
                for hook in self._on_reconnect:
                    _call(hook)
            first = False
            await self._watch(conn)
            self._conn = None
            if not self._stopping:
                logger.warning("listener: connection lost, reconnecting")
            await _close_quietly(conn)

    async def _connect(self) -> asyncpg.Connection:
        conn = await asyncpg.connect(
            self.url,
            timeout=self.connect_timeout,
            statement_cache_size=0,
            server_settings={"application_name": self.application_name},
        )
        try:
            for channel in self._channels:
                await conn.add_listener(channel, self._dispatch)
        except BaseException:
            await _close_quietly(conn)
            raise
        return conn

    async def _watch(self, conn: asyncpg.Connection) -> None:
        """Return when ``conn`` is lost: closed (asyncpg tells at once when the server ends
        it) or silent (the periodic check times out)."""
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _conn: lost.set())
        while not conn.is_closed():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.check_interval):
                    await lost.wait()
            if lost.is_set() or conn.is_closed():
                return
            try:
                async with self._using:
                    await conn.fetchval("SELECT 1", timeout=self.check_timeout)
            except _CONNECTION_ERRORS as exc:
                logger.warning("listener: check failed: %s", _reason(exc))
                conn.terminate()
                return

    def _dispatch(self, _conn: object, _pid: int, channel: str, payload: str) -> None:
        for callback in self._channels.get(channel, ()):
            _call(callback, payload)

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await _close_quietly(conn)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, UNAVAILABLE_ERRORS):
        return f"{unavailable(exc).reason}: {exc}"
    return f"{type(exc).__name__}: {exc}"


def _call(callback: Callable[..., None], *args: Any) -> None:
    try:
        callback(*args)
    except Exception:
        logger.exception("listener: a callback failed")


async def _close_quietly(conn: asyncpg.Connection) -> None:
    """Close ``conn`` (ending its LISTENs); terminate it when it does not close in time."""
    if conn.is_closed():
        return
    try:
        await asyncio.shield(conn.close(timeout=2))
    except _CONNECTION_ERRORS:
        conn.terminate()
