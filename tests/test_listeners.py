"""LISTEN on several databases as one (the nodes of a Citus cluster): a notification on any
reaches the callbacks, one database down makes the whole disconnected (the caches bypass
themselves), and its return calls the reconnect hooks. Two real servers: the suite's, and
one of the test's own that it stops and starts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest

from gateway.api.app import listen_urls
from gateway.callers.auth import CredentialCache
from gateway.settings import Settings
from gateway.storage.db import Database, asyncpg_dsn
from gateway.storage.listeners import Listeners
from tests.own_postgres import OwnPostgres

APP = "listeners-under-test"
KEY = "key:" + "ab" * 32
OTHER = "key:" + "cd" * 32


async def _until(check: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds} s: {what}")
        await asyncio.sleep(0.02)


@pytest.fixture
def other_server() -> Iterator[OwnPostgres]:
    pg = OwnPostgres()
    pg.start()
    try:
        yield pg
    finally:
        pg.close()


async def _notify(url: str, channel: str, payload: str) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        await conn.execute("SELECT pg_notify($1, $2)", channel, payload)
    finally:
        await conn.close()


async def test_every_database_is_heard_and_one_down_bypasses_the_caches(
    database_url: str, db: Database, other_server: OwnPostgres
) -> None:
    received: list[str] = []
    reconnects: list[bool] = []
    listeners = Listeners(
        [database_url, other_server.url], application_name=APP, check_interval=0.2
    )
    listeners.on("test_nodes", received.append)
    cache = CredentialCache(max_entries=10, max_age=60)
    cache.attach(listeners)
    listeners.on_reconnect(lambda: reconnects.append(listeners.connected))
    await listeners.start(wait=5)
    try:
        assert listeners.connected and listeners.connections == 2
        await _notify(database_url, "test_nodes", "from-the-first")
        await _notify(other_server.url, "test_nodes", "from-the-second")
        await _until(lambda: len(received) == 2, 2, "both notifications")
        assert sorted(received) == ["from-the-first", "from-the-second"]

        # A revocation on the second database drops the entry the first never heard of.
        cache.put(KEY, 1, cache.ticket())
        cache.put(OTHER, 2, cache.ticket())
        await _notify(other_server.url, "gateway_credentials", KEY)
        await _until(lambda: cache.get(KEY) is None, 2, "the revocation")
        assert cache.get(OTHER) == 2

        # The second database goes away: the whole is disconnected, the cache bypassed.
        await asyncio.to_thread(other_server.stop_server)
        await _until(lambda: not listeners.connected, 5, "the lost connection")
        assert not cache.active
        assert cache.get(OTHER) is None
        cache.put(KEY, 3, cache.ticket())
        assert len(cache) == 1  # nothing read or kept while a node could be missed
        await _notify(database_url, "test_nodes", "while-one-is-down")
        await _until(lambda: received[-1] == "while-one-is-down", 2, "the first still heard")
        assert reconnects == []

        # It comes back: reconnected, the hooks ran (the cache emptied), heard again.
        await asyncio.to_thread(other_server.start_server)
        await _until(lambda: listeners.connected, 10, "the reconnection")
        assert reconnects == [True]
        assert len(cache) == 0 and cache.active
        assert listeners.connections == 3
        await _notify(other_server.url, "test_nodes", "after")
        await _until(lambda: received[-1] == "after", 2, "the second heard again")
        assert len(received) == 4
    finally:
        await listeners.stop()
    assert not listeners.connected
    sql = "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1"
    await _until_async(lambda: db.fetchval(sql, APP), 0, 2)


async def _until_async(fetch: Any, expected: object, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while await fetch() != expected:
        assert time.monotonic() < deadline, "the listener's session outlived stop()"
        await asyncio.sleep(0.02)


async def test_a_channel_added_later_is_listened_to_on_every_database(
    database_url: str, other_server: OwnPostgres
) -> None:
    received: list[str] = []
    listeners = Listeners([database_url, other_server.url], application_name=APP)
    await listeners.start(wait=5)
    try:
        await listeners.listen("test_later", received.append)
        await _notify(other_server.url, "test_later", "b")
        await _notify(database_url, "test_later", "a")
        await _until(lambda: sorted(received) == ["a", "b"], 2, "both notifications")
    finally:
        await listeners.stop()


def test_where_the_gateway_listens() -> None:
    base = {"database_url": "postgresql://pool/db"}
    assert listen_urls(Settings(**base), "postgresql://pool/db") == ["postgresql://pool/db"]
    direct = Settings(**base, gateway_direct_database_url="postgresql://direct/db")
    assert listen_urls(direct, "postgresql://pool/db") == ["postgresql://direct/db"]
    nodes = Settings(
        **base,
        gateway_direct_database_url="postgresql://direct/db",
        gateway_listen_database_urls=" postgresql://c:9700/db, postgresql://w1:9701/db,,"
        "postgresql://w2:9702/db ",
    )
    assert listen_urls(nodes, "postgresql://pool/db") == [
        "postgresql://c:9700/db",
        "postgresql://w1:9701/db",
        "postgresql://w2:9702/db",
    ]
