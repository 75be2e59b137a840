"""The supervised LISTEN connection: notifications, a lost connection healed, clean stop."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from gateway.storage.db import Database
from gateway.storage.listener import Listener

APP = "listener-under-test"


async def _until(check: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds} s: {what}")
        await asyncio.sleep(0.02)


async def test_the_listener_reconnects_listens_again_and_says_so(
    database_url: str, db: Database
) -> None:
    received: list[tuple[str, str]] = []
    reconnects: list[bool] = []
    listener = Listener(database_url, application_name=APP)
    listener.on("test_a", lambda payload: received.append(("a", payload)))
    listener.on_reconnect(lambda: reconnects.append(listener.connected))
    await listener.start(wait=5)
    try:
        assert listener.connected
        await db.execute("SELECT pg_notify('test_a', 'one')")
        await _until(lambda: received == [("a", "one")], 2, "the first notification")

        # The server ends the connection (as a restart or a failover does).
        terminated = await db.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name = $1",
            APP,
        )
        assert terminated == 1
        await _until(lambda: reconnects == [True], 2, "the reconnection")
        assert listener.connections == 2
        await db.execute("SELECT pg_notify('test_a', 'two')")
        await _until(lambda: received == [("a", "one"), ("a", "two")], 2, "LISTEN again")

        # A channel added while connected is listened to at once.
        await listener.listen("test_b", lambda payload: received.append(("b", payload)))
        await db.execute("SELECT pg_notify('test_b', 'three')")
        await _until(lambda: received[-1] == ("b", "three"), 2, "the new channel")
        assert len(received) == 3
    finally:
        await listener.stop()
    assert not listener.connected
    deadline = time.monotonic() + 2
    sql = "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1"
    while await db.fetchval(sql, APP) != 0:  # the server ends the session as the socket closes
        assert time.monotonic() < deadline, "the listener's session outlived stop()"
        await asyncio.sleep(0.02)
    assert reconnects == [True]


async def test_a_failing_callback_does_not_stop_the_others(database_url: str, db: Database) -> None:
    received: list[str] = []

    def broken(_payload: str) -> None:
        raise RuntimeError("a bug in one subscriber")

    listener = Listener(database_url, application_name=APP)
    listener.on("test_c", broken)
    listener.on("test_c", received.append)
    await listener.start(wait=5)
    try:
        await db.execute("SELECT pg_notify('test_c', 'x')")
        await db.execute("SELECT pg_notify('test_c', 'y')")
        await _until(lambda: received == ["x", "y"], 2, "both notifications")
        assert listener.connections == 1
    finally:
        await listener.stop()
