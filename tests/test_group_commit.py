"""Group commit of createUsageEvent (gateway.billing.group_commit): singles that arrive while
a write is in flight go out as one batch statement, each answered as if sent alone.

A write is kept in flight by a row lock held from another connection (a real lock on a real
balance row): the single behind it is sent and waits at the server, the next ones are gathered,
and releasing the lock lets the gathered ones go.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from itertools import count
from typing import Any

import asyncpg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.billing import usage
from gateway.callers.auth import Caller
from gateway.errors import ErrorCode, UserError
from gateway.settings import Settings
from gateway.storage.db import Database, start_counting
from tests.conftest import GraphQLClient
from tests.factories import create_customer, customer_on_plan, setup_pricing, subscribe

SECRET = Caller(kind="secret_key", key_id=uuid.uuid4())
_names = count()


def _event(sub: str, tx: str | None, amount: int = 1, **more: Any) -> usage.UsageInput:
    return usage.UsageInput(
        target_kind="usageMeterSlug",
        target=more.pop("meter", "generations"),
        amount=amount,
        subscription_id=sub,
        transaction_id=tx or f"tx-{uuid.uuid4().hex}",
        **more,
    )


def _grouping(base: Settings) -> Settings:
    # No overdue send: the gathered events wait for the write in flight, however slow.
    return base.model_copy(update={"gateway_group_commit_max_wait_ms": 600_000.0})


async def _wait_until(condition: Callable[[], bool]) -> None:
    for _ in range(2000):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("timed out waiting")


@asynccontextmanager
async def _write_in_flight(
    db: Database, config: Settings, blocker_sub: str
) -> AsyncIterator[asyncio.Task[usage.UsageResult]]:
    """A single event on ``blocker_sub`` sent and waiting on its balance row's lock, held by
    another connection until the block ends; the committer counts it in flight meanwhile."""
    committer = usage.committer(db, config)
    conn = await asyncpg.connect(db.url)
    try:
        tx = conn.transaction()
        await tx.start()
        await conn.execute(
            "SELECT 1 FROM meter_balances WHERE subscription_id = $1 FOR UPDATE",
            uuid.UUID(blocker_sub),
        )
        blocked = asyncio.ensure_future(
            usage.record_usage_event(db, config, SECRET, _event(blocker_sub, None))
        )
        await _wait_until(lambda: committer.in_flight == 1)
        try:
            yield blocked
        finally:
            await tx.rollback()
    finally:
        await conn.close()
    result = await blocked
    assert isinstance(result, usage.UsageRecorded) and not result.replayed


async def _blocker(gql: GraphQLClient, db: Database, config: Settings) -> str:
    """A subscription with a balance row (written by one event) to hold a lock on."""
    sub = await customer_on_plan(gql, f"blocker-{next(_names)}", "pro_monthly")
    result = await usage.record_usage_event(db, config, SECRET, _event(sub, None))
    assert isinstance(result, usage.UsageRecorded)
    return sub


async def test_a_lone_event_takes_the_single_statement_at_once(gql, db, settings) -> None:
    await setup_pricing(gql)
    sub = await customer_on_plan(gql, "user-1", "pro_monthly")
    committer = usage.committer(db, settings)
    batches = committer.batches
    counter = start_counting()
    result = await usage.record_usage_event(db, settings, SECRET, _event(sub, "lone", 3))
    assert isinstance(result, usage.UsageRecorded) and not result.replayed
    assert counter.count == 1 and counter.statements[0].startswith("SELECT record_usage_event("), (
        counter.statements
    )
    assert (committer.batches, committer.in_flight, committer.queued) == (batches, 0, 0)


async def test_events_arriving_during_a_write_go_as_one_batch(gql, db, settings) -> None:
    await setup_pricing(gql)
    config = _grouping(settings)
    blocker = await _blocker(gql, db, config)
    subs = [await customer_on_plan(gql, f"user-{i}", "pro_monthly") for i in range(5)]
    committer = usage.committer(db, config)
    batches = committer.batches
    counter = start_counting()
    async with _write_in_flight(db, config, blocker):
        tasks = [
            asyncio.ensure_future(
                usage.record_usage_event(db, config, SECRET, _event(s, f"g{i}", i + 1))
            )
            for i, s in enumerate(subs)
        ]
        await _wait_until(lambda: committer.queued == 5)
        assert counter.count == 1  # only the blocked single was sent
    results = await asyncio.gather(*tasks)
    # The blocked single, then one batch statement for the five gathered events (five
    # customers': one call of record_usage_batch() for all of them on one PostgreSQL).
    assert len(counter.statements) == 2
    assert counter.statements[0].startswith("SELECT record_usage_event(")
    assert counter.statements[1] == usage._BATCH_SQL
    assert committer.batches == batches + 1
    for i, (s, result) in enumerate(zip(subs, results, strict=True)):
        assert isinstance(result, usage.UsageRecorded) and not result.replayed
        assert result.event_data["transaction_id"] == f"g{i}"
        assert result.event_data["subscription_id"] == s
        assert result.balance is not None and result.balance.used_balance == i + 1
    written = await db.fetch(
        "SELECT transaction_id, amount FROM usage_events WHERE transaction_id LIKE 'g%'"
        " ORDER BY transaction_id"
    )
    assert [(r["transaction_id"], r["amount"]) for r in written] == [
        (f"g{i}", i + 1) for i in range(5)
    ]


async def test_a_slow_write_in_flight_holds_the_gathered_ones_back_only_max_wait(
    gql, db, settings
) -> None:
    await setup_pricing(gql)
    config = settings.model_copy(update={"gateway_group_commit_max_wait_ms": 50.0})
    blocker = await _blocker(gql, db, config)
    subs = [await customer_on_plan(gql, f"user-{i}") for i in range(2)]
    committer = usage.committer(db, config)
    batches = committer.batches
    async with _write_in_flight(db, config, blocker) as blocked:
        loop = asyncio.get_running_loop()
        started = loop.time()
        results = await asyncio.gather(
            *(usage.record_usage_event(db, config, SECRET, _event(s, None)) for s in subs)
        )
        waited = loop.time() - started
        assert not blocked.done()  # still waiting on its lock: the two went without it
    assert all(isinstance(r, usage.UsageRecorded) for r in results)
    assert committer.batches == batches + 1
    assert 0.05 <= waited < 5, waited


async def test_a_cancelled_gathered_event_is_not_sent_and_the_others_are_answered(
    gql, db, settings
) -> None:
    await setup_pricing(gql)
    config = _grouping(settings)
    blocker = await _blocker(gql, db, config)
    sub = await customer_on_plan(gql, "user-1", "pro_monthly")
    committer = usage.committer(db, config)
    async with _write_in_flight(db, config, blocker):
        tasks = [
            asyncio.ensure_future(usage.record_usage_event(db, config, SECRET, _event(sub, tx)))
            for tx in ("c1", "c2", "c3")
        ]
        await _wait_until(lambda: committer.queued == 3)
        tasks[1].cancel()
        await asyncio.sleep(0)
    first, third = await tasks[0], await tasks[2]
    assert tasks[1].cancelled()
    assert isinstance(first, usage.UsageRecorded) and isinstance(third, usage.UsageRecorded)
    assert first.balance is not None and third.balance is not None
    assert (first.balance.used_balance, third.balance.used_balance) == (1, 2)
    written = await db.fetch(
        "SELECT transaction_id FROM usage_events WHERE subscription_id = $1 ORDER BY seq",
        uuid.UUID(sub),
    )
    assert [r["transaction_id"] for r in written] == ["c1", "c3"]
    assert committer.queued == 0 and committer.in_flight == 0


async def test_a_failed_batch_reaches_every_caller_as_a_single_failure(gql, db, settings) -> None:
    await setup_pricing(gql)
    config = _grouping(settings)
    blocker = await _blocker(gql, db, config)
    sub = await customer_on_plan(gql, "user-1", "pro_monthly")
    committer = usage.committer(db, config)
    # A constraint the two events break: the batch statement itself fails.
    await db.execute(
        "ALTER TABLE usage_events ADD CONSTRAINT gc_refuse"
        " CHECK (transaction_id NOT IN ('f1', 'f2'))"
    )
    try:
        async with _write_in_flight(db, config, blocker):
            tasks = [
                asyncio.ensure_future(usage.record_usage_event(db, config, SECRET, _event(sub, tx)))
                for tx in ("f1", "f2")
            ]
            await _wait_until(lambda: committer.queued == 2)
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await db.execute("ALTER TABLE usage_events DROP CONSTRAINT gc_refuse")
    assert [type(o) for o in outcomes] == [asyncpg.CheckViolationError] * 2
    assert (
        await db.fetchval(
            "SELECT count(*) FROM usage_events WHERE subscription_id = $1", uuid.UUID(sub)
        )
        == 0
    )
    assert committer.queued == 0 and committer.in_flight == 0


async def test_a_gathered_event_whose_balance_row_is_busy_does_not_hold_its_batch(
    gql, db, settings
) -> None:
    await setup_pricing(gql)
    config = _grouping(settings)
    blocker = await _blocker(gql, db, config)
    busy, free1, free2 = [await customer_on_plan(gql, f"user-{i}") for i in range(3)]
    committer = usage.committer(db, config)
    batches = committer.batches
    key = f"{busy}/usageMeterSlug:generations"
    async with AsyncExitStack() as holders:
        for _ in range(db.writers.limit):  # every writer slot of one balance row taken
            await holders.enter_async_context(db.writers.hold([key]))
        assert not db.writers.free(key)
        async with _write_in_flight(db, config, blocker):
            tasks = [
                asyncio.ensure_future(usage.record_usage_event(db, config, SECRET, _event(s, tx)))
                for s, tx in ((busy, "b0"), (free1, "b1"), (free2, "b2"))
            ]
            await _wait_until(lambda: committer.queued == 3)
        # The two others went as one batch; the busy one waits for its row's turn alone.
        done = await asyncio.gather(tasks[1], tasks[2])
        assert all(isinstance(r, usage.UsageRecorded) for r in done)
        assert committer.batches == batches + 1
        assert not tasks[0].done()
        assert (
            await db.fetchval("SELECT count(*) FROM usage_events WHERE transaction_id = 'b0'") == 0
        )
    recorded = await tasks[0]
    assert isinstance(recorded, usage.UsageRecorded) and not recorded.replayed
    assert recorded.event_data["subscription_id"] == busy


# The property: answers of a group commit equal those of the same events one by one.

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_GENERATED = re.compile(r"tx-[0-9a-f]{32}")
_DROPPED = {"id", "created_at", "usage_date", "billing_period_id", "period_start", "period_end"}


def _normal(value: Any, roles: dict[str, str]) -> Any:
    """An answer with this world's ids replaced by their roles, and generated ids and times
    dropped (they differ between two equal worlds)."""
    if isinstance(value, UserError | usage.UsageRecorded):
        value = {"type": type(value).__name__, **dataclasses.asdict(value)}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, dict):
        return {k: _normal(v, roles) for k, v in value.items() if k not in _DROPPED}
    if isinstance(value, list | tuple):
        return [_normal(v, roles) for v in value]
    if isinstance(value, uuid.UUID):
        value = str(value)
    if isinstance(value, str):
        value = _GENERATED.sub("tx-*", value)
        return _UUID.sub(lambda m: roles.get(m.group(0), m.group(0)), value)
    if isinstance(value, ErrorCode):
        return value.value
    return value


_ROLES = [("pro", "pro_monthly"), ("free", "free_monthly")]
events = st.lists(
    st.tuples(
        st.sampled_from(range(len(_ROLES))),  # subscription of the one customer
        st.sampled_from(["generations", "api_calls"]),
        st.integers(min_value=1, max_value=6),  # amount (free_monthly grants 10 generations)
        st.one_of(st.none(), st.sampled_from(["t1", "t2", "t3"])),  # transactionId
        st.booleans(),  # requireBalance
    ),
    min_size=2,
    max_size=12,
)


async def _world(gql: GraphQLClient) -> tuple[list[str], dict[str, str]]:
    name = f"world-{next(_names)}"
    customer = await create_customer(gql, name)
    subs = [str((await subscribe(gql, name, price))["id"]) for _, price in _ROLES]
    roles = {customer: "customer", **{s: role for s, (role, _) in zip(subs, _ROLES, strict=True)}}
    return subs, roles


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batch=events, warm=st.booleans())
async def test_group_commit_answers_equal_one_by_one_answers(
    gql, db, settings: Settings, batch: list[tuple[int, str, int, str | None, bool]], warm: bool
) -> None:
    config = _grouping(settings)
    if not await db.fetchval("SELECT count(*) FROM pricing_models"):
        await setup_pricing(gql)
    blocker = await _blocker(gql, db, config)
    one_subs, one_roles = await _world(gql)
    group_subs, group_roles = await _world(gql)
    meters = dict(await db.fetch("SELECT slug, id FROM usage_meters"))

    def make(subs: list[str], item: tuple[int, str, int, str | None, bool]) -> usage.UsageInput:
        role, meter, amount, tx, require = item
        return _event(subs[role], tx, amount, meter=meter, require_balance=require)

    if warm:  # balance rows exist: the batch's set-based path can take steady groups
        for subs in (one_subs, group_subs):
            for sub in subs:
                for meter in ("generations", "api_calls"):
                    warmed = await usage.record_usage_event(
                        db, config, SECRET, _event(sub, f"warm-{sub}-{meter}", meter=meter)
                    )
                    assert isinstance(warmed, usage.UsageRecorded)

    # The batch statement serialises its events by (subscription, meter), in arrival order
    # within each: two concurrent events have no order between them, and the one-by-one run
    # takes the same serial order.
    order = sorted(
        range(len(batch)),
        key=lambda i: (uuid.UUID(group_subs[batch[i][0]]), meters[batch[i][1]]),
    )
    one_by_one: list[Any] = [None] * len(batch)
    for i in order:
        one_by_one[i] = await usage.record_usage_event(db, config, SECRET, make(one_subs, batch[i]))

    committer = usage.committer(db, config)
    batches = committer.batches
    recorded: list[Awaitable[usage.UsageResult]] = []
    async with _write_in_flight(db, config, blocker):
        recorded = [
            asyncio.ensure_future(
                usage.record_usage_event(db, config, SECRET, make(group_subs, item))
            )
            for item in batch
        ]
        await _wait_until(lambda: committer.queued == len(batch))
    grouped = await asyncio.gather(*recorded)
    assert committer.batches == batches + 1
    assert [_normal(r, group_roles) for r in grouped] == [_normal(r, one_roles) for r in one_by_one]
    # And the same rows: the events written, in each balance's order.
    rows = """SELECT s.id AS sub, m.slug, e.transaction_id LIKE 'tx-%' AS generated,
                     CASE WHEN e.transaction_id LIKE 'tx-%' THEN '' ELSE e.transaction_id END,
                     e.amount, e.covered
                FROM usage_events e JOIN subscriptions s ON s.id = e.subscription_id
                JOIN usage_meters m ON m.id = e.usage_meter_id
               WHERE s.id = ANY($1::uuid[]) ORDER BY m.slug, e.seq"""

    async def written(subs: list[str], roles: dict[str, str]) -> list[Any]:
        found = await db.fetch(rows, [uuid.UUID(s) for s in subs])
        named = _normal([tuple(r) for r in found], roles)
        return sorted(named, key=lambda r: (r[0], r[1]))  # stable: each balance's order

    assert await written(group_subs, group_roles) == await written(one_subs, one_roles)
