"""Credentials cached per process (gateway.callers.auth.CredentialCache): a revocation made
anywhere (another process, the CLI, plain SQL) reaches every process by NOTIFY within a
second; while a process's listener is down it looks every credential up; unknown keys are
never kept; a lookup that raced a revocation does not keep what it read."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest

from gateway.callers.auth import (
    AuthenticationError,
    CredentialCache,
    authenticate,
    create_api_key,
    hash_key,
)
from gateway.storage.db import Database, start_counting
from gateway.storage.listener import Listener
from tests.conftest import GraphQLClient
from tests.factories import (
    CREATE_USAGE_EVENT,
    create_customer,
    customer_on_plan,
    session_token,
    setup_pricing,
)
from tests.servers import gateway_processes

KEY_REFUSED = {
    "data": None,
    "errors": [
        {"message": "unknown or revoked secret key", "extensions": {"code": "UNAUTHENTICATED"}}
    ],
}
TOKEN_REFUSED = {
    "data": None,
    "errors": [
        {"message": "the session token was revoked", "extensions": {"code": "UNAUTHENTICATED"}}
    ],
}
REVOKE_SESSIONS = """mutation($e: String!) { revokeCustomerSessions(input: {customerExternalId: $e})
  { __typename } }"""
APP = "credential-cache-under-test"


def _event(sub_id: str, transaction_id: str) -> dict[str, Any]:
    payload = {
        "target": {"usageMeterSlug": "generations"},
        "subscriptionId": sub_id,
        "amount": 1,
        "transactionId": transaction_id,
    }
    return {"query": CREATE_USAGE_EVENT, "variables": {"input": payload}}


async def _events(db: Database, transaction_id: str | None = None) -> int:
    if transaction_id is None:
        return int(await db.fetchval("SELECT count(*) FROM usage_events"))
    sql = "SELECT count(*) FROM usage_events WHERE transaction_id = $1"
    return int(await db.fetchval(sql, transaction_id))


async def _until_refused(
    send: Callable[[str], Awaitable[httpx.Response]], since: float, seconds: float = 1.0
) -> tuple[httpx.Response, str, float]:
    """Send (each time with a new transaction id) until one is answered 401; the refusal,
    its transaction id and how long after ``since`` it came. Fails after ``seconds``."""
    attempt = 0
    while True:
        attempt += 1
        transaction_id = f"poll-{attempt}"
        response = await send(transaction_id)
        if response.status_code == 401:
            return response, transaction_id, time.monotonic() - since
        assert response.status_code == 200, response.text
        assert response.json()["data"]["createUsageEvent"]["__typename"] == "UsageEventRecorded"
        if time.monotonic() - since > seconds:
            raise AssertionError(f"still accepted {seconds} s after the revocation")
        await asyncio.sleep(0.01)


async def test_a_key_revoked_in_sql_is_refused_by_every_process_within_a_second(
    gql: GraphQLClient, db: Database, database_url: str
) -> None:
    await setup_pricing(gql)
    sub_id = await customer_on_plan(gql, "user-1")
    info, key = await create_api_key(db, "fleet")
    headers = {"authorization": f"Bearer {key}"}
    with gateway_processes(database_url, 2) as urls:
        async with httpx.AsyncClient(timeout=10) as client:
            for n, url in enumerate(urls):  # both processes know the key now
                for attempt in range(2):
                    response = await client.post(
                        url + "/graphql",
                        json=_event(sub_id, f"warm-{n}-{attempt}"),
                        headers=headers,
                    )
                    assert response.status_code == 200, response.text
            assert await _events(db) == 4

            # A plain UPDATE, as an operator would type it: the trigger notifies.
            await db.execute("UPDATE api_keys SET revoked_at = now() WHERE id = $1", info.id)
            revoked_at = time.monotonic()
            for n, url in enumerate(urls):

                async def send(transaction_id: str, url: str = url, n: int = n) -> httpx.Response:
                    body = _event(sub_id, f"p{n}-{transaction_id}")
                    return await client.post(url + "/graphql", json=body, headers=headers)

                refusal, transaction_id, after = await _until_refused(send, revoked_at)
                assert refusal.json() == KEY_REFUSED
                assert after < 1.0
                assert await _events(db, f"p{n}-{transaction_id}") == 0  # nothing recorded


async def test_revoked_sessions_are_refused_by_the_other_process_within_a_second(
    gql: GraphQLClient, db: Database, database_url: str, secret_key: str
) -> None:
    await setup_pricing(gql)
    sub_id = await customer_on_plan(gql, "user-1")
    token = await session_token(gql, "user-1")
    with gateway_processes(database_url, 2) as (first, second):
        async with httpx.AsyncClient(timeout=10) as client:

            async def post(url: str, body: dict[str, Any], credential: str) -> httpx.Response:
                headers = {"authorization": f"Bearer {credential}"}
                return await client.post(url + "/graphql", json=body, headers=headers)

            for url in (first, second):  # both processes hold the customer's row now
                for attempt in range(2):
                    response = await post(url, _event(sub_id, f"warm-{url}-{attempt}"), token)
                    assert response.status_code == 200, response.text
            revoke = {"query": REVOKE_SESSIONS, "variables": {"e": "user-1"}}
            response = await post(first, revoke, secret_key)
            assert response.json() == {
                "data": {"revokeCustomerSessions": {"__typename": "CustomerSessionsRevoked"}}
            }
            revoked_at = time.monotonic()
            # The revoking process forgot the customer at once: its very next request.
            response = await post(first, _event(sub_id, "first-next"), token)
            assert (response.status_code, response.json()) == (401, TOKEN_REFUSED)

            async def send(transaction_id: str) -> httpx.Response:
                return await post(second, _event(sub_id, f"second-{transaction_id}"), token)

            refusal, transaction_id, after = await _until_refused(send, revoked_at)
            assert refusal.json() == TOKEN_REFUSED
            assert after < 1.0
            assert await _events(db, f"second-{transaction_id}") == 0
            assert await _events(db, "first-next") == 0


# --- one process's cache, driven directly ----------------------------------------------------


@pytest.fixture
async def listened(database_url: str) -> AsyncIterator[tuple[CredentialCache, Listener]]:
    cache = CredentialCache(max_entries=100, max_age=60)
    listener = Listener(database_url, application_name=APP, initial_backoff=0.01)
    cache.attach(listener)
    await listener.start(wait=5)
    assert listener.connected
    try:
        yield cache, listener
    finally:
        await listener.stop()


async def _until(check: Callable[[], bool], what: str, seconds: float = 2.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"not within {seconds} s: {what}"
        await asyncio.sleep(0.01)


async def _auth(db: Database, cache: CredentialCache, key: str) -> tuple[Any, int]:
    """The caller (or the refusal's message) and the round trips authentication made."""
    counter = start_counting()
    try:
        caller: Any = await authenticate(db, "unused-secret", f"Bearer {key}", cache)
    except AuthenticationError as exc:
        caller = str(exc)
    return caller, counter.count


async def test_while_the_listener_is_down_every_request_looks_its_key_up(
    db: Database, listened: tuple[CredentialCache, Listener]
) -> None:
    cache, listener = listened
    info, key = await create_api_key(db, "outage")
    assert (await _auth(db, cache, key))[1] == 1
    caller, trips = await _auth(db, cache, key)
    assert (caller.key_id, trips) == (info.id, 0)  # warm

    # The listener's connection dies, and cannot come back (its address is unreachable):
    # a revocation now notifies nobody in this process.
    good_url = listener.url
    listener.url = "postgresql://postgres@127.0.0.1:1/nowhere"
    terminated = await db.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1",
        APP,
    )
    assert terminated == 1
    await _until(lambda: not listener.connected, "the listener notices")
    caller, trips = await _auth(db, cache, key)
    assert (caller.key_id, trips) == (info.id, 1)  # bypassed: looked up
    await db.execute("UPDATE api_keys SET revoked_at = now() WHERE id = $1", info.id)
    assert await _auth(db, cache, key) == ("unknown or revoked secret key", 1)

    # Back: the cache was emptied on reconnection, and the key stays refused.
    connections = listener.connections
    listener.url = good_url
    await _until(lambda: listener.connections > connections, "the reconnection")
    assert len(cache) == 0
    assert await _auth(db, cache, key) == ("unknown or revoked secret key", 1)


async def test_unknown_keys_are_not_kept(
    db: Database, listened: tuple[CredentialCache, Listener]
) -> None:
    cache, _ = listened
    info, key = await create_api_key(db, "known")
    await _auth(db, cache, key)
    assert len(cache) == 1
    for _ in range(200):
        assert await _auth(db, cache, "sk_" + secrets.token_urlsafe(32)) == (
            "unknown or revoked secret key",
            1,
        )
    assert len(cache) == 1
    # A key created now works at once, on its first request.
    info2, key2 = await create_api_key(db, "new")
    caller, trips = await _auth(db, cache, key2)
    assert (caller.key_id, trips, len(cache)) == (info2.id, 1, 2)
    caller, trips = await _auth(db, cache, key)
    assert (caller.key_id, trips) == (info.id, 0)


class _RevokedDuringLookup:
    """The database, but the key lookup's answer arrives only after the key was revoked and
    the revocation's notification was handled (as a slow answer would)."""

    def __init__(self, db: Database, cache: CredentialCache, key_id: Any) -> None:
        self.db, self.cache, self.key_id = db, cache, key_id

    async def fetchrow(self, sql: str, *args: Any) -> Any:
        row = await self.db.fetchrow(sql, *args)
        generation = self.cache.ticket()
        await self.db.execute("UPDATE api_keys SET revoked_at = now() WHERE id = $1", self.key_id)
        await _until(lambda: self.cache.ticket() > generation, "the notification")
        return row


async def test_a_lookup_that_raced_a_revocation_does_not_keep_the_key(
    db: Database, listened: tuple[CredentialCache, Listener]
) -> None:
    cache, _ = listened
    info, key = await create_api_key(db, "raced")
    slow: Any = _RevokedDuringLookup(db, cache, info.id)
    caller = await authenticate(slow, "unused-secret", f"Bearer {key}", cache)
    assert caller.key_id == info.id  # it read the key before the revocation committed
    assert len(cache) == 0  # but did not keep it
    assert await _auth(db, cache, key) == ("unknown or revoked secret key", 1)


async def test_a_notification_drops_one_entry_and_an_unusable_one_drops_all(
    db: Database, listened: tuple[CredentialCache, Listener]
) -> None:
    cache, _ = listened
    keys = [await create_api_key(db, f"k{i}") for i in range(3)]
    for _, key in keys:
        await _auth(db, cache, key)
    assert len(cache) == 3
    generation = cache.ticket()
    await db.execute("SELECT pg_notify('gateway_credentials', $1)", "key:" + hash_key(keys[0][1]))
    await _until(lambda: cache.ticket() > generation, "the notification")
    assert len(cache) == 2
    assert [(await _auth(db, cache, key))[1] for _, key in keys] == [1, 0, 0]
    generation = cache.ticket()
    await db.execute("SELECT pg_notify('gateway_credentials', 'key:not-a-hash')")
    await _until(lambda: cache.ticket() > generation, "the notification")
    assert len(cache) == 0


async def test_the_triggers_announce_every_change_that_ends_a_credential(
    gql: GraphQLClient, db: Database, database_url: str
) -> None:
    await setup_pricing(gql)
    await create_customer(gql, "user-1")
    customer_id = await db.fetchval("SELECT id FROM customers WHERE external_id = 'user-1'")
    info, key = await create_api_key(db, "doomed")
    received: list[str] = []
    listener = Listener(database_url, application_name=APP)
    listener.on("gateway_credentials", received.append)
    await listener.start(wait=5)
    try:
        # Neither a new key nor an unrelated change notifies.
        await create_api_key(db, "another")
        await db.execute("UPDATE customers SET name = 'Renamed' WHERE id = $1", customer_id)
        await db.execute("UPDATE api_keys SET revoked_at = now() WHERE id = $1", info.id)
        await db.execute("DELETE FROM api_keys WHERE id = $1", info.id)
        await db.execute(
            "UPDATE customers SET sessions_revoked_before = now() WHERE id = $1", customer_id
        )
        await db.execute("DELETE FROM customers WHERE id = $1", customer_id)
        await db.execute("TRUNCATE api_keys")
        expected = ["key:" + hash_key(key)] * 2 + [f"customer:{customer_id}"] * 2 + [""]
        await _until(lambda: len(received) >= len(expected), "the notifications")
        await asyncio.sleep(0.1)  # and no more
        assert received == expected
    finally:
        await listener.stop()
