"""The hot path is shard-local: each of its statements touches one customer's partition.

The proof runs on plain PostgreSQL. A scratch database is migrated to head, then every
customer-scoped table (gateway/storage/distribution.py) is rebuilt ``PARTITION BY HASH``
of its distribution column into 4 partitions, with the same columns, checks, keys, indexes
and foreign keys (a partitioned table refuses a primary key or unique constraint without
the partition column, which already re-checks the keys), and the functions are created
again from their sources. Then the gateway's own code (gateway.billing, gateway.reservations)
runs the hot path against it: single events, a batch of two customers' events, balance
reads, a manual grant, reserve/finalize/release and a void, with an alert and a webhook
endpoint so that the alert outbox is written too.

Every statement is seen as executed, nested ones included: ``auto_explain`` (loaded into
the one pooled connection, ``log_nested_statements``, ``log_analyze``, sent to the client as
NOTICEs) hands over the executed plan of each statement, the gateway's and each statement
inside the database functions. A partition counts as touched when a plan node scanned it
(``Actual Loops`` > 0); partitions pruned at planning or at executor start-up do not appear
at all. Each statement that touches a customer-scoped table must touch exactly one
partition, the one of the customer the call is for. Rows written by INSERT are routed to
their customer's partition by PostgreSQL itself (their plans name only the parent table).
A control statement that does not filter by customer (the owner look-up by id alone)
touches all four: the check sees a fan-out when there is one.

The gateway's Database plays Citus here (``distributed``): a batch of several customers is
sent as one call per customer, as on Citus, and ``_record_usage_steady()`` plans custom on
partitioned tables as it does on Citus (a generic plan cannot prune by a parameter array).
On one unpartitioned PostgreSQL the batch is one call for all its customers.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest

from gateway.billing import balances, customers, subscriptions, usage
from gateway.billing.catalog import CatalogCache
from gateway.billing.pricing_setup import setup_pricing_model
from gateway.callers.auth import Caller
from gateway.errors import UserError
from gateway.reservations import holds, voids
from gateway.settings import Settings
from gateway.storage.db import Database, _init_connection, _keep_session, asyncpg_dsn
from gateway.storage.distribution import CUSTOMER_SCOPED
from gateway.storage.migrate import upgrade
from gateway.storage.sql_sources import sources
from tests.conftest import _with_database
from tests.factories import PRICING

PARTITIONS = 4
AUTO_EXPLAIN = (
    ("log_min_duration", "-1"),  # off until _watched() turns it on
    ("log_analyze", "on"),
    ("log_timing", "off"),
    ("log_nested_statements", "on"),
    ("log_format", "json"),
    ("log_level", "notice"),
)
NAME = "gateway_partitioned_hot_path"
SECRET = Caller(kind="secret_key", key_id=uuid.uuid4())
PARTITION = re.compile(r"^(?P<table>[a-z_]+)_p(?P<remainder>\d)$")
# Functions that take no table's row type (column defaults use uuid_v7(), triggers the
# last): kept as they are. The credential triggers of customers go with the table (not part
# of the hot path).
KEPT_FUNCTIONS = ("uuid_v7", "billing_period", "billing_period_id", "notify_credentials_changed")


async def _partition_by_customer(conn: asyncpg.Connection) -> None:
    """Rebuild every customer-scoped table as a hash-partitioned table, in place."""
    tables = list(CUSTOMER_SCOPED)
    foreign_keys = await conn.fetch(
        "SELECT conrelid::regclass::text AS tbl, conname, pg_get_constraintdef(oid) AS def"
        "  FROM pg_constraint WHERE contype = 'f'"
        "   AND (conrelid::regclass::text = ANY($1) OR confrelid::regclass::text = ANY($1))",
        tables,
    )
    keys = await conn.fetch(
        "SELECT conrelid::regclass::text AS tbl, conname, pg_get_constraintdef(oid) AS def"
        "  FROM pg_constraint WHERE contype IN ('p', 'u') AND conrelid::regclass::text = ANY($1)",
        tables,
    )
    indexes = await conn.fetch(
        "SELECT i.indexdef FROM pg_indexes i WHERE i.schemaname = 'public'"
        "   AND i.tablename = ANY($1) AND NOT EXISTS (SELECT 1 FROM pg_constraint c"
        "       WHERE c.conname = i.indexname AND c.contype IN ('p', 'u'))",
        tables,
    )
    functions = await conn.fetch(
        "SELECT oid::regprocedure::text AS f FROM pg_proc"
        " WHERE pronamespace = 'public'::regnamespace AND NOT proname = ANY($1)",
        list(KEPT_FUNCTIONS),
    )
    for row in functions:
        await conn.execute(f"DROP FUNCTION {row['f']}")
    for fk in foreign_keys:
        await conn.execute(f'ALTER TABLE {fk["tbl"]} DROP CONSTRAINT "{fk["conname"]}"')
    for table, column in CUSTOMER_SCOPED.items():
        await conn.execute(
            f"CREATE TABLE {table}__parted (LIKE {table} INCLUDING DEFAULTS INCLUDING"
            f" CONSTRAINTS INCLUDING GENERATED) PARTITION BY HASH ({column})"
        )
        for r in range(PARTITIONS):
            await conn.execute(
                f"CREATE TABLE {table}_p{r} PARTITION OF {table}__parted"
                f" FOR VALUES WITH (MODULUS {PARTITIONS}, REMAINDER {r})"
            )
        await conn.execute(f"DROP TABLE {table}")
        await conn.execute(f"ALTER TABLE {table}__parted RENAME TO {table}")
    for key in keys:
        await conn.execute(
            f'ALTER TABLE {key["tbl"]} ADD CONSTRAINT "{key["conname"]}" {key["def"]}'
        )
    for index in indexes:
        await conn.execute(index["indexdef"])
    for fk in foreign_keys:
        await conn.execute(f'ALTER TABLE {fk["tbl"]} ADD CONSTRAINT "{fk["conname"]}" {fk["def"]}')
    await conn.execute("SET LOCAL check_function_bodies = off")  # sources refer to each other
    for name, statement in sources().items():
        if name not in KEPT_FUNCTIONS:
            await conn.execute(statement)


class Plans:
    """The executed plans auto_explain sends as NOTICEs on the one pooled connection."""

    def __init__(self) -> None:
        self.plans: list[dict[str, Any]] = []

    def listener(self, _conn: object, message: asyncpg.PostgresLogMessage) -> None:
        text = message.message
        if "plan:" in text:
            self.plans.append(json.loads(text.split("plan:", 1)[1])["Plan"])

    def touched(self) -> list[set[tuple[str, int]]]:
        """Per statement that touched a partition: the (table, remainder) pairs it touched."""
        found: list[set[tuple[str, int]]] = []
        for plan in self.plans:
            parts: set[tuple[str, int]] = set()
            stack = [plan]
            while stack:
                node = stack.pop()
                stack.extend(node.get("Plans", []))
                match = PARTITION.match(node.get("Relation Name", ""))
                if match and match["table"] in CUSTOMER_SCOPED and node.get("Actual Loops", 0):
                    parts.add((match["table"], int(match["remainder"])))
            if parts:
                found.append(parts)
        return found


class ExplainedDatabase(Database):
    """The gateway's Database on one connection that explains what it runs (when
    ``auto_explain.log_min_duration`` is 0) to ``plans``. The pool removes a listener on
    release, so it is added again on every acquire."""

    def __init__(self, url: str, plans: Plans) -> None:
        super().__init__(url, min_size=1, max_size=1)
        self.plans = plans

    async def connect(self) -> None:
        async def init(conn: asyncpg.Connection) -> None:
            await _init_connection(conn)
            await conn.execute("LOAD 'auto_explain'")
            for name, value in AUTO_EXPLAIN:
                await conn.execute(f"SET auto_explain.{name} = {value}")

        async def setup(conn: asyncpg.Connection) -> None:
            conn.add_log_listener(self.plans.listener)

        self._pool = await asyncpg.create_pool(
            self.url,
            min_size=1,
            max_size=1,
            init=init,
            setup=setup,
            reset=_keep_session,
            server_settings=self.server_settings(),
        )
        self.distributed = True  # one call per customer, as on Citus (module docstring)


@pytest.fixture
async def partitioned(database_url: str) -> AsyncIterator[tuple[Database, Plans]]:
    admin = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{NAME}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{NAME}"')
        url = _with_database(database_url, NAME)
        await asyncio.to_thread(upgrade, url)
        conn = await asyncpg.connect(asyncpg_dsn(url))
        try:
            async with conn.transaction():
                await _partition_by_customer(conn)
        finally:
            await conn.close()
        plans = Plans()
        db = ExplainedDatabase(url, plans)
        await db.connect()
        try:
            yield db, plans
        finally:
            await db.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{NAME}" WITH (FORCE)')
        await admin.close()


async def _partition_of(db: Database, customer_id: uuid.UUID) -> int:
    name = await db.fetchval(
        "SELECT tableoid::regclass::text FROM customers WHERE id = $1", customer_id
    )
    match = PARTITION.match(name)
    assert match is not None, name
    return int(match["remainder"])


async def _watched(
    db: Database, plans: Plans, call: Callable[[], Awaitable[Any]]
) -> tuple[Any, list[set[tuple[str, int]]]]:
    """What ``call`` returns, and the partitions each of its statements touched."""
    plans.plans.clear()
    await db.execute("SET auto_explain.log_min_duration = 0")
    try:
        result = await call()
    finally:
        await db.execute("SET auto_explain.log_min_duration = -1")
    await asyncio.sleep(0.01)  # asyncpg hands notices to the listener in later loop turns
    touched = plans.touched()
    plans.plans.clear()
    return result, touched


def _one_partition(touched: list[set[tuple[str, int]]], remainder: int) -> None:
    assert touched, "no statement touched a customer's table"
    for parts in touched:
        assert {r for _, r in parts} == {remainder}, parts


async def test_each_hot_statement_touches_one_partition(
    partitioned: tuple[Database, Plans], settings: Settings
) -> None:
    db, plans = partitioned
    model = await setup_pricing_model(db, PRICING)
    assert not isinstance(model, UserError)
    await db.execute("UPDATE pricing_models SET is_default = true")
    catalogs = CatalogCache(db, 60)
    # Customers until two sit in different partitions.
    subs: dict[int, tuple[uuid.UUID, uuid.UUID]] = {}  # remainder -> (customer, subscription)
    for i in range(32):
        customer = await customers.create_customer(db, f"user-{i}", None, None)
        assert not isinstance(customer, UserError)
        sub = await subscriptions.create_subscription(
            db, catalogs, f"user-{i}", "pro_monthly", None
        )
        assert not isinstance(sub, UserError)
        subs.setdefault(await _partition_of(db, customer.id), (customer.id, sub.id))
        if len(subs) == 2:
            break
    (a_part, (_, a_sub)), (b_part, (_, b_sub)) = sorted(subs.items())
    meters = {
        m.slug: m.id
        for m in (await catalogs.get_many([model.pricing_model_id]))[model.pricing_model_id].meters
    }
    await db.execute(
        "INSERT INTO usage_alerts (pricing_model_id, usage_meter_id, percent_used)"
        " VALUES ($1, $2, 0.01)",
        model.pricing_model_id,
        meters["generations"],
    )
    await db.execute(
        "INSERT INTO webhook_endpoints (url, secret) VALUES ('http://127.0.0.1:9/', 'whsec_x')"
    )

    def event(sub: uuid.UUID, tx: str, amount: int = 1, **extra: Any) -> usage.UsageInput:
        return usage.UsageInput(
            target_kind="usageMeterSlug",
            target=extra.pop("meter", "generations"),
            amount=amount,
            subscription_id=str(sub),
            transaction_id=tx,
            **extra,
        )

    for sub, part in ((a_sub, a_part), (b_sub, b_part)):
        recorded, touched = await _watched(
            db,
            plans,
            lambda sub=sub: usage.record_usage_event(db, settings, SECRET, event(sub, "one", 2)),
        )
        assert isinstance(recorded, usage.UsageRecorded) and not recorded.replayed
        _one_partition(touched, part)
        replay, touched = await _watched(
            db,
            plans,
            lambda sub=sub: usage.record_usage_event(db, settings, SECRET, event(sub, "one", 2)),
        )
        assert isinstance(replay, usage.UsageRecorded) and replay.replayed
        _one_partition(touched, part)
        distinct, touched = await _watched(
            db,
            plans,
            lambda sub=sub: usage.record_usage_event(
                db, settings, SECRET, event(sub, "u1", meter="unique_users", properties={"u": 1})
            ),
        )
        assert isinstance(distinct, usage.UsageRecorded)
        _one_partition(touched, part)

    # A batch of two customers: A's four items take the set-based statement, B's one goes
    # item by item; the statement itself only calls record_usage_events() once per customer.
    batch = [event(a_sub, f"a{i}") for i in range(4)] + [event(b_sub, "b0")]
    results, touched = await _watched(
        db, plans, lambda: usage.record_usage_events(db, settings, SECRET, batch)
    )
    assert [type(r).__name__ for r in results] == ["UsageRecorded"] * 5
    assert touched
    for parts in touched:
        assert len({r for _, r in parts}) == 1, parts
    assert {next(iter(parts))[1] for parts in touched} == {a_part, b_part}

    # Balance reads, a manual grant.
    found, touched = await _watched(
        db, plans, lambda: balances.balances(db, [(a_sub, meters["generations"])])
    )
    assert found[(a_sub, meters["generations"])].used_balance == 6
    _one_partition(touched, a_part)
    granted, touched = await _watched(
        db, plans, lambda: balances.grant_usage_credits(db, str(b_sub), "generations", 5, None)
    )
    assert not isinstance(granted, UserError)
    _one_partition(touched, b_part)

    # Reserve, finalize, release, void.
    hold = holds.ReserveInput(
        target_kind="usageMeterSlug",
        target="generations",
        amount=3,
        subscription_id=str(a_sub),
        transaction_id="hold-1",
        expires_in_seconds=60,
    )
    reserved, touched = await _watched(
        db, plans, lambda: holds.reserve_usage(db, settings, SECRET, hold)
    )
    assert isinstance(reserved, holds.UsageReserved)
    _one_partition(touched, a_part)
    done, touched = await _watched(
        db,
        plans,
        lambda: holds.finalize_usage_reservation(
            db, settings, SECRET, str(reserved.reservation.id), 2
        ),
    )
    assert isinstance(done, usage.UsageRecorded)
    _one_partition(touched, a_part)
    other = holds.ReserveInput(**{**hold.__dict__, "transaction_id": "hold-2"})
    second = await holds.reserve_usage(db, settings, SECRET, other)
    assert isinstance(second, holds.UsageReserved)
    freed, touched = await _watched(
        db, plans, lambda: holds.release_usage_reservation(db, SECRET, str(second.reservation.id))
    )
    assert not isinstance(freed, UserError)
    _one_partition(touched, a_part)
    voided, touched = await _watched(
        db, plans, lambda: voids.void_usage_event(db, settings, done.event_data["id"], "mistake")
    )
    assert not isinstance(voided, UserError) and not voided.already_voided
    _one_partition(touched, a_part)

    # The alert fired (its outbox rows are the customers'), on each customer's partition.
    assert await db.fetchval("SELECT count(DISTINCT customer_id) FROM usage_alert_events") == 2
    assert await db.fetchval("SELECT count(*) FROM webhook_deliveries") >= 2

    # The control: a look-up by id alone fans out to every partition, and is seen to.
    _, touched = await _watched(
        db, plans, lambda: db.fetch("SELECT customer_id FROM subscriptions WHERE id = $1", a_sub)
    )
    assert touched == [{("subscriptions", r) for r in range(PARTITIONS)}]
