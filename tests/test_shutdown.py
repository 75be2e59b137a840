"""Graceful shutdown: a request in flight when SIGTERM arrives completes; then the pool closes.

`billing-gateway serve` runs as a subprocess against the test database. A test transaction
holds a lock on usage_events so that a createUsageEvent request is provably in flight (its
statement waits on the lock) when SIGTERM is sent.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from gateway.demo import prepare_demo
from gateway.settings import Settings
from gateway.storage.db import Database, asyncpg_dsn
from tests.servers import free_port

ROOT = Path(__file__).parent.parent
RECORD = """
mutation Record($input: CreateUsageEventInput!) {
  createUsageEvent(input: $input) {
    __typename
    ... on UsageEventRecorded { replayed balance { usedBalance } }
  }
}
"""


async def _wait_until(check: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def _serve(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """`billing-gateway serve` in a subprocess, its output (JSON logs) into `log`."""
    with log.open("w") as log_file:
        return subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve", *args],
            cwd=ROOT,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )


def _uvicorn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """The app under uvicorn itself (whose options include the shutdown grace)."""
    with log.open("w") as log_file:
        return subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "gateway.api.app:app_from_env", *args],
            cwd=ROOT,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )


def _log_messages(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


async def test_a_request_in_flight_at_sigterm_completes(
    db: Database, settings: Settings, database_url: str, tmp_path: Path
) -> None:
    demo = await prepare_demo(db, settings, settings.token_secret())
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "server.log"
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "GATEWAY_TOKEN_SECRET": settings.token_secret(),
        "GATEWAY_DATA_DIR": str(tmp_path / "data"),
        # The request waits on the test's lock on purpose: longer than the default timeout.
        "GATEWAY_LOCK_TIMEOUT_SECONDS": "60",
    }
    server = _serve(["--host", "127.0.0.1", "--port", str(port)], env, log)
    locker = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        async with httpx.AsyncClient(base_url=base, timeout=60) as client:

            async def ready() -> bool:
                try:
                    return (await client.get("/readyz")).status_code == 200
                except httpx.TransportError:
                    return False

            try:
                await _wait_until(ready, 30, "the server to be ready")
            except AssertionError as exc:
                raise AssertionError(f"{exc}; its log:\n{log.read_text()[-3000:]}") from None

            transaction = locker.transaction()
            await transaction.start()
            await locker.execute("LOCK TABLE usage_events IN ACCESS EXCLUSIVE MODE")
            in_flight = asyncio.create_task(
                client.post(
                    "/graphql",
                    json={
                        "query": RECORD,
                        "variables": {
                            "input": {
                                "target": {"usageMeterSlug": "ai_generations"},
                                "amount": 2,
                                "subscriptionId": str(demo.subscription_id),
                                "transactionId": "sigterm-1",
                            }
                        },
                    },
                    headers={
                        "Authorization": f"Bearer {demo.secret_key}",
                        "X-Request-ID": "in-flight",
                    },
                )
            )

            async def waiting_on_the_lock() -> bool:
                return bool(
                    await db.fetchval(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                        " AND wait_event_type = 'Lock' AND query LIKE '%record_usage_event(%'"
                    )
                )

            await _wait_until(waiting_on_the_lock, 10, "the request to wait on the lock")
            server.send_signal(signal.SIGTERM)

            async def refusing_new_connections() -> bool:
                try:
                    async with httpx.AsyncClient(timeout=1) as fresh:
                        await fresh.get(base + "/healthz")
                except httpx.TransportError:
                    return True
                return False

            await _wait_until(refusing_new_connections, 10, "new connections to be refused")
            await asyncio.sleep(0.5)
            assert server.poll() is None, "the server exited with a request in flight"
            assert not in_flight.done()

            await transaction.rollback()  # release the lock: the request goes on
            response = await asyncio.wait_for(in_flight, 30)
    finally:
        await locker.close()
        if server.poll() is None:
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()

    assert response.status_code == 200
    assert response.headers["x-request-id"] == "in-flight"
    assert response.json() == {
        "data": {
            "createUsageEvent": {
                "__typename": "UsageEventRecorded",
                "replayed": False,
                "balance": {"usedBalance": 5},
            }
        }
    }
    assert server.returncode == 0
    assert (
        await db.fetchval("SELECT count(*) FROM usage_events WHERE transaction_id = 'sigterm-1'")
        == 1
    )

    messages = [(m["logger"], m["message"]) for m in _log_messages(log)]
    access = ("gateway.access", "POST /graphql 200")
    closed = ("uvicorn.error", "Application shutdown complete.")
    assert access in messages, messages
    assert closed in messages, messages
    # The request finished, then the lifespan closed the pool, then the process exited.
    assert messages.index(access) < messages.index(closed)
    assert messages[-1] == ("gateway", "stopped by SIGTERM")


@pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGINT])
async def test_serve_exits_cleanly_on_signals(
    settings: Settings, database_url: str, tmp_path: Path, signal_number: int
) -> None:
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "GATEWAY_TOKEN_SECRET": settings.token_secret(),
    }
    log = tmp_path / "server.log"
    server = _serve(["--port", str(port)], env, log)
    try:
        async with httpx.AsyncClient(timeout=5) as client:

            async def up() -> bool:
                try:
                    return (await client.get(f"http://127.0.0.1:{port}/healthz")).is_success
                except httpx.TransportError:
                    return False

            await _wait_until(up, 30, "the server to start")
        server.send_signal(signal_number)
        assert server.wait(timeout=30) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    messages = [m["message"] for m in _log_messages(log)]
    assert "Application shutdown complete." in messages


async def test_a_request_still_running_when_the_grace_ends_gets_a_json_503(
    db: Database, settings: Settings, database_url: str, tmp_path: Path
) -> None:
    """The request waits on a lock past the shutdown grace (1 s here): the server cancels it
    and answers 503 SERVICE_UNAVAILABLE in JSON; its statement is cancelled, nothing written."""
    demo = await prepare_demo(db, settings, settings.token_secret())
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "server.log"
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "GATEWAY_TOKEN_SECRET": settings.token_secret(),
        "GATEWAY_LOCK_TIMEOUT_SECONDS": "60",
    }
    server = _uvicorn(["--port", str(port), "--timeout-graceful-shutdown", "1"], env, log)
    locker = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        async with httpx.AsyncClient(base_url=base, timeout=60) as client:

            async def ready() -> bool:
                try:
                    return (await client.get("/readyz")).status_code == 200
                except httpx.TransportError:
                    return False

            await _wait_until(ready, 30, "the server to be ready")
            transaction = locker.transaction()
            await transaction.start()
            await locker.execute("LOCK TABLE usage_events IN ACCESS EXCLUSIVE MODE")
            in_flight = asyncio.create_task(
                client.post(
                    "/graphql",
                    json={
                        "query": RECORD,
                        "variables": {
                            "input": {
                                "target": {"usageMeterSlug": "ai_generations"},
                                "amount": 2,
                                "subscriptionId": str(demo.subscription_id),
                                "transactionId": "past-grace",
                            }
                        },
                    },
                    headers={"Authorization": f"Bearer {demo.secret_key}"},
                )
            )

            async def waiting_on_the_lock() -> bool:
                return bool(
                    await db.fetchval(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                        " AND wait_event_type = 'Lock' AND query LIKE '%record_usage_event(%'"
                    )
                )

            await _wait_until(waiting_on_the_lock, 10, "the request to wait on the lock")
            server.send_signal(signal.SIGTERM)
            response = await asyncio.wait_for(in_flight, 10)
            # The statement was cancelled at the server: it no longer waits.
            await _wait_until(lambda: _not(waiting_on_the_lock), 5, "the statement to be cancelled")
            await transaction.rollback()
    finally:
        await locker.close()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()

    assert response.status_code == 503
    assert response.headers["content-type"] == "application/json"
    assert response.headers["retry-after"] == "1"
    assert response.json() == {
        "errors": [
            {
                "message": "Service unavailable: the server is shutting down; retry in 1 s",
                "extensions": {"code": "SERVICE_UNAVAILABLE", "retryAfter": 1},
            }
        ]
    }
    await asyncio.sleep(0.5)
    assert (
        await db.fetchval("SELECT count(*) FROM usage_events WHERE transaction_id = 'past-grace'")
        == 0
    )
    text = log.read_text()
    assert "Traceback" not in text, text
    assert text.count("service unavailable in POST /graphql: the server is shutting down") == 1


async def _not(check: Any) -> bool:
    return not await check()
