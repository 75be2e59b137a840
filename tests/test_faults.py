"""Faults: no request waits without bound, and the gateway heals by itself.

Real gateway processes (``tests.servers``) on a real PostgreSQL. The timeouts are made small
through the environment so that the tests stay short; the properties do not depend on the
values (a lock held for 5 s with a 1 s lock timeout is, for the gateway, the same situation as
a lock held for 20 s with the default 2 s).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from gateway.billing.catalog import notify_catalog_changed
from gateway.callers.auth import create_api_key
from gateway.storage.db import Database, asyncpg_dsn
from gateway.storage.isolation import KeyedLimiter
from gateway.storage.migrate import upgrade
from gateway.storage.unavailable import DatabaseUnavailable
from tests.conftest import GraphQLClient
from tests.factories import CREATE_USAGE_EVENT, customer_on_plan, record, setup_pricing
from tests.own_postgres import OwnPostgres
from tests.servers import gateway_processes

LOCK_TIMEOUT = 1.0
HOLD_SECONDS = 5.0  # longer than any wait the gateway allows a request (see the module doc)


async def _record(
    client: httpx.AsyncClient, url: str, key: str, payload: dict[str, Any]
) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = await client.post(
        url + "/graphql",
        json={"query": CREATE_USAGE_EVENT, "variables": {"input": payload}},
        headers={"Authorization": f"Bearer {key}"},
    )
    return response, time.monotonic() - started


def _event(sub_id: str, transaction_id: str, amount: int = 1) -> dict[str, Any]:
    return {
        "target": {"usageMeterSlug": "generations"},
        "subscriptionId": sub_id,
        "amount": amount,
        "transactionId": transaction_id,
    }


def _assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "1"
    body = response.json()
    assert body["data"] is None
    (error,) = body["errors"]
    assert error["extensions"] == {"code": "SERVICE_UNAVAILABLE", "retryAfter": 1}
    assert error["message"] in (
        "Service unavailable: lock timeout; retry in 1 s",
        "Service unavailable: too many writes in flight for one subscription and meter;"
        " retry in 1 s",
    )


def _log_lines(logs: Path) -> list[str]:
    return [line for path in sorted(logs.glob("*.log")) for line in path.read_text().splitlines()]


async def test_a_locked_balance_stalls_only_its_own_subscription(
    gql: Any, db: Database, secret_key: str, database_url: str, tmp_path: Path
) -> None:
    await setup_pricing(gql)
    stuck = await customer_on_plan(gql, "stuck", "pro_monthly")
    others = [await customer_on_plan(gql, f"other-{i}", "pro_monthly") for i in range(4)]
    await record(gql, **_event(stuck, "stuck-first"))  # the balance row exists from here on

    env = {
        "GATEWAY_LOCK_TIMEOUT_SECONDS": str(LOCK_TIMEOUT),
    }
    locker = await asyncpg.connect(asyncpg_dsn(database_url))
    with gateway_processes(database_url, 2, logs=tmp_path, **env) as urls:
        limits = httpx.Limits(max_connections=100)
        async with httpx.AsyncClient(limits=limits, timeout=30) as client:

            async def other_customers(
                prefix: str, until: float | None = None
            ) -> list[tuple[httpx.Response, float]]:
                """Every other customer records an event, again and again until ``until``
                (monotonic time; None: once); readiness is checked on the way."""
                answers: list[tuple[httpx.Response, float]] = []
                round_ = 0
                while round_ == 0 or (until is not None and time.monotonic() < until):
                    answers += await asyncio.gather(
                        *(
                            _record(
                                client,
                                urls[(round_ + i) % 2],
                                secret_key,
                                _event(sub, f"{prefix}{i}-{round_}"),
                            )
                            for i, sub in enumerate(others)
                        )
                    )
                    for url in urls:
                        ready = await client.get(url + "/readyz")
                        assert ready.status_code == 200, ready.text
                    round_ += 1
                return answers

            # The same requests without the lock, on this machine as loaded as it is now:
            # the baseline that the latencies under the lock are compared with.
            unlocked: list[tuple[httpx.Response, float]] = []
            for attempt in range(3):
                unlocked += await other_customers(f"base{attempt}-")
            assert [r.status_code for r, _ in unlocked] == [200] * 3 * len(others)
            baseline = max(elapsed for _, elapsed in unlocked)

            lock = locker.transaction()
            await lock.start()
            await locker.execute(
                "SELECT 1 FROM meter_balances WHERE subscription_id = $1 FOR UPDATE", stuck
            )
            held_since = time.monotonic()

            stuck_requests = [
                asyncio.create_task(
                    _record(client, urls[i % 2], secret_key, _event(stuck, f"stuck-{i}"))
                )
                for i in range(12)
            ]
            other_answers = await other_customers("o", until=held_since + HOLD_SECONDS)
            stuck_answers = await asyncio.gather(*stuck_requests)
            assert time.monotonic() - held_since >= HOLD_SECONDS
            await lock.rollback()  # release the lock
            await asyncio.sleep(1)  # anything still queued for the row would be written now

            # Every other customer's request completed, round after round for the whole hold,
            # none slower than the baseline by a lock timeout: a request that queued behind the
            # stuck row (for the row or for a pooled connection held by one of its writes)
            # would wait at least that long. Compared with a baseline measured in this test,
            # not a fixed second, because on a loaded 2-core machine the same requests take
            # up to a second without any lock.
            limit = max(1.0, baseline + LOCK_TIMEOUT)
            rounds, rest = divmod(len(other_answers), len(others))
            assert rest == 0 and rounds >= 2, (len(other_answers), baseline)
            for response, elapsed in other_answers:
                assert response.status_code == 200, response.text
                result = response.json()["data"]["createUsageEvent"]
                assert result["__typename"] == "UsageEventRecorded", result
                assert elapsed < limit, (elapsed, baseline)
            # The 12 were told to retry: the ones waiting for their turn after the lock timeout
            # without progress on their row, the ones at the server after at most twice the
            # lock timeout (PostgreSQL queues a row's waiters in two steps, a lock on the
            # tuple then on the holder's transaction, each bounded by lock_timeout). None of
            # them was written.
            print(
                [
                    (i % 2, round(e, 2), r.json()["errors"][0]["message"][21:30])
                    for i, (r, e) in enumerate(stuck_answers)
                ]
            )
            for response, elapsed in stuck_answers:
                _assert_unavailable(response)
                assert elapsed < 2 * LOCK_TIMEOUT + 1.0, elapsed  # 1 s for a loaded machine
            stuck_ids = [f"stuck-{i}" for i in range(12)]
            assert (
                await db.fetchval(
                    "SELECT count(*) FROM usage_events WHERE transaction_id = ANY($1)", stuck_ids
                )
                == 0
            )
            other_ids = [
                r.json()["data"]["createUsageEvent"]["usageEvent"]["transactionId"]
                for r, _ in other_answers
            ]
            assert await db.fetchval(
                "SELECT count(*) FROM usage_events WHERE transaction_id = ANY($1)", other_ids
            ) == len(other_ids)

            # Retried once the lock is gone, the 12 are recorded, once each.
            retried = await asyncio.gather(
                *(
                    _record(client, urls[i % 2], secret_key, _event(stuck, f"stuck-{i}"))
                    for i in range(12)
                )
            )
            assert Counter(
                (r.status_code, r.json()["data"]["createUsageEvent"]["replayed"])
                for r, _ in retried
            ) == {(200, False): 12}
            assert (
                await db.fetchval(
                    "SELECT count(*) FROM usage_events WHERE transaction_id = ANY($1)", stuck_ids
                )
                == 12
            )
    await locker.close()

    # One warning line per refused request, no stack trace.
    lines = _log_lines(tmp_path)
    assert sum("service unavailable in" in line for line in lines) == 12, lines
    assert not any("Traceback" in line for line in lines), lines


# --- the pool's timeouts ------------------------------------------------------------------


async def test_a_statement_past_its_timeout_is_rolled_back(database_url: str, db: Database) -> None:
    timed = Database(database_url, min_size=1, max_size=1, statement_timeout=0.2)
    await timed.connect()
    try:
        started = time.monotonic()
        try:
            await timed.fetchval(
                "WITH written AS (INSERT INTO api_keys (name, prefix, key_hash)"
                " VALUES ('slow', 'sk_slow', 'x') RETURNING 1)"
                " SELECT pg_sleep(5) FROM written"
            )
        except DatabaseUnavailable as exc:
            assert exc.reason == "statement timeout"
        else:
            raise AssertionError("the statement was not cancelled")
        assert time.monotonic() - started < 2
        assert await db.fetchval("SELECT count(*) FROM api_keys WHERE name = 'slow'") == 0
        assert await timed.fetchval("SELECT 1") == 1  # the connection is usable again
    finally:
        await timed.close()


async def test_waiting_for_a_pooled_connection_is_bounded(database_url: str) -> None:
    small = Database(database_url, min_size=1, max_size=1, acquire_timeout=0.2)
    await small.connect()
    try:
        async with small.transaction():  # the only connection is taken
            started = time.monotonic()
            try:
                await small.fetchval("SELECT 1")
            except DatabaseUnavailable as exc:
                assert exc.reason == "no database connection available in time"
            else:
                raise AssertionError("the pool handed out a connection it does not have")
            assert 0.2 <= time.monotonic() - started < 1
            # Readiness does not take a busy pool for an outage: it asks on its own connection.
            assert await small.probe("SELECT 42", 2) == 42
    finally:
        await small.close()


# --- the writer limit on its own ------------------------------------------------------------


async def test_writers_of_a_hot_key_queue_while_it_progresses() -> None:
    """30 writes of 40 ms each on one key, 2 at a time: 0.6 s in all, longer than the stall
    bound (0.2 s) for the last ones, which still wait their turn because writes complete."""
    limiter = KeyedLimiter(2, timeout=5.0, stall=0.2)
    done: list[int] = []

    async def write(n: int) -> None:
        async with limiter.hold(["sub/meter"]):
            await asyncio.sleep(0.04)
            done.append(n)

    await asyncio.gather(*(write(n) for n in range(30)))
    assert sorted(done) == list(range(30))
    assert limiter.in_use() == 0


async def test_writers_of_a_stuck_key_give_up_and_other_keys_go_on() -> None:
    limiter = KeyedLimiter(2, timeout=5.0, stall=0.2)
    release = asyncio.Event()
    entered: list[str] = []

    async def write(key: str, name: str, stuck: bool) -> str:
        try:
            async with limiter.hold([key]):
                entered.append(name)
                if stuck:
                    await release.wait()
                    raise DatabaseUnavailable("lock timeout")
        except DatabaseUnavailable as exc:
            return exc.reason
        return "ok"

    started = time.monotonic()
    stuck = [asyncio.create_task(write("stuck", f"s{i}", True)) for i in range(6)]
    await asyncio.sleep(0.01)
    assert await write("other", "o", False) == "ok"  # another key is not held up
    waiters = await asyncio.gather(*stuck[2:])
    assert waiters == ["too many writes in flight for one subscription and meter"] * 4
    assert time.monotonic() - started < 0.4
    assert entered == ["s0", "s1", "o"]  # the 4 waiters never held the key
    release.set()
    assert await asyncio.gather(*stuck[:2]) == ["lock timeout"] * 2
    assert limiter.in_use() == 0


# --- PostgreSQL restarts ------------------------------------------------------------------

CATALOG = '{ billing(customerExternalId: "user-1") { catalog { usageMeters { slug defaultPrice { slug } } } } }'


class _Load:
    """Clients recording events with unique transactionIds, retrying each (same id) until it is
    acknowledged, as a client following the 503's Retry-After does. One HTTP client per
    (worker, server), each with a single connection, so that a dropped connection shows."""

    def __init__(self, urls: list[str], key: str, sub_id: str, workers: int) -> None:
        self.urls = urls
        self.key = key
        self.sub_id = sub_id
        self.workers = workers
        self.acknowledged: dict[str, str] = {}  # transactionId -> event id
        self.unavailable = 0
        self.other_failures: list[str] = []
        self.ports: dict[tuple[int, int], set[int]] = {}
        self.stopping = False

    async def run(self) -> None:
        await asyncio.gather(*(self._worker(w) for w in range(self.workers)))

    async def _worker(self, worker: int) -> None:
        clients = [
            httpx.AsyncClient(base_url=url, timeout=30, limits=httpx.Limits(max_connections=1))
            for url in self.urls
        ]
        try:
            n = 0
            while not self.stopping:
                transaction_id = f"w{worker}-{n}"
                while True:
                    server = (worker + n) % len(clients)
                    response = await clients[server].post(
                        "/graphql",
                        json={
                            "query": CREATE_USAGE_EVENT,
                            "variables": {"input": _event(self.sub_id, transaction_id)},
                        },
                        headers={"Authorization": f"Bearer {self.key}"},
                    )
                    stream = response.extensions["network_stream"]
                    try:
                        port = stream.get_extra_info("client_addr")[1]
                    except OSError:  # the server closed the connection after this response
                        port = -1
                    self.ports.setdefault((worker, server), set()).add(port)
                    if response.status_code == 200 and "errors" not in response.json():
                        result = response.json()["data"]["createUsageEvent"]
                        if result["__typename"] == "UsageEventRecorded":
                            self.acknowledged[transaction_id] = result["usageEvent"]["id"]
                            break
                        self.other_failures.append(str(result))
                        return
                    if response.status_code == 503:
                        _assert_database_unavailable(response)
                        self.unavailable += 1
                        await asyncio.sleep(0.05)
                        continue
                    self.other_failures.append(f"{response.status_code} {response.text}")
                    return
                n += 1
                await asyncio.sleep(0.02)
        finally:
            for client in clients:
                await client.aclose()


def _assert_database_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "1"
    assert response.headers.get("connection") != "close"
    (error,) = response.json()["errors"]
    assert error["extensions"] == {"code": "SERVICE_UNAVAILABLE", "retryAfter": 1}
    assert error["message"].startswith("Service unavailable: "), error


async def _default_price(client: httpx.AsyncClient, url: str, key: str) -> str:
    response = await client.post(
        url + "/graphql", json={"query": CATALOG}, headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code == 200, response.text
    meters = response.json()["data"]["billing"]["catalog"]["usageMeters"]
    return str(next(m["defaultPrice"]["slug"] for m in meters if m["slug"] == "generations"))


async def _listening(db: Database, processes: int) -> bool:
    count = await db.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name ="
        " 'billing-gateway-listener' AND state = 'idle' AND (query LIKE 'LISTEN %' OR query = 'SELECT 1')"
    )
    return bool(count == processes)


async def _until(check: Any, seconds: float, what: str) -> float:
    """Poll ``check`` until true; returns the seconds it took."""
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > seconds:
            raise AssertionError(f"not within {seconds} s: {what}")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def test_the_gateway_heals_after_a_postgresql_restart(tmp_path: Path) -> None:
    pg = OwnPostgres()
    admin_url = pg.start()
    logs = tmp_path / "logs"
    logs.mkdir()
    try:
        admin = await asyncpg.connect(asyncpg_dsn(admin_url))
        await admin.execute('CREATE DATABASE "faults"')
        await admin.close()
        url = admin_url.replace("/postgres?", "/faults?")
        await asyncio.to_thread(upgrade, url)
        db = Database(url, min_size=1, max_size=2)
        await db.connect()
        _, key = await create_api_key(db, "faults")
        with gateway_processes(url, 2, logs=logs) as urls:
            async with httpx.AsyncClient(base_url=urls[0], timeout=30) as setup_http:
                gql = GraphQLClient(setup_http)
                gql.token = key
                model = await setup_pricing(gql)
                sub_id = await customer_on_plan(gql, "user-1", "pro_monthly")

            load = _Load(urls, key, sub_id, workers=4)
            running = asyncio.create_task(load.run())
            async with httpx.AsyncClient(timeout=30) as client:
                await asyncio.sleep(1)
                await db.close()
                await asyncio.to_thread(pg.stop_server)
                await asyncio.sleep(1)
                # While the database is down: 503, and readiness says so.
                for base in urls:
                    response, _ = await _record(client, base, key, _event(sub_id, "outage"))
                    _assert_database_unavailable(response)
                    ready = await client.get(base + "/readyz")
                    assert ready.status_code == 503
                    assert ready.json()["database"] == "unreachable"
                probes = len(urls)

                await asyncio.to_thread(pg.start_server)
                # Each process answers again within 2 s of the database.
                for base in urls:

                    async def answers(base: str = base) -> bool:
                        nonlocal probes
                        response = await client.post(
                            base + "/graphql",
                            json={"query": CATALOG},
                            headers={"Authorization": f"Bearer {key}"},
                        )
                        probes += response.status_code == 503
                        return response.status_code == 200

                    await _until(answers, 2, f"{base} to answer after the restart")
                    ready = await client.get(base + "/readyz")
                    assert ready.status_code == 200, ready.text

                await asyncio.sleep(1)
                load.stopping = True
                await running

                # Every acknowledged event is stored, once; nothing else is.
                await db.connect()
                stored = await db.fetch("SELECT transaction_id, id FROM usage_events")
                assert load.other_failures == []
                assert {r["transaction_id"]: str(r["id"]) for r in stored} == load.acknowledged
                assert len(stored) == len(load.acknowledged)
                # No connection was dropped: every client kept its one connection.
                assert {k: len(v) for k, v in load.ports.items()} == {
                    (w, s): 1 for w in range(4) for s in range(2)
                }

                # The listeners are back: a catalog change is seen at once by every process
                # (within 2 s); without its notification it would not be (the cache is used).
                await _until(lambda: _listening(db, 2), 3, "both listeners to be back")
                for base in urls:
                    assert await _default_price(client, base, key) == "generations_overage"
                async with db.transaction() as conn:
                    await conn.execute(
                        "UPDATE prices SET is_default = false, active = false"
                        " WHERE slug = 'generations_overage'"
                    )
                    await conn.execute(
                        "UPDATE prices SET is_default = true WHERE slug = 'generations_no_charge'"
                    )
                for base in urls:
                    assert await _default_price(client, base, key) == "generations_overage"
                async with db.transaction() as conn:
                    await notify_catalog_changed(conn, uuid.UUID(model["id"]))
                for base in urls:

                    async def fresh(base: str = base) -> bool:
                        return await _default_price(client, base, key) == "generations_no_charge"

                    await _until(fresh, 2, f"{base} to see the catalog change")
        await db.close()
    finally:
        pg.close()

    # One log line per refused request, no stack trace, and a clean shutdown.
    lines = _log_lines(logs)
    assert sum("service unavailable in" in line for line in lines) == load.unavailable + probes
    assert not any("Traceback" in line for line in lines), lines
    assert not any("remove_listener" in line for line in lines), lines
