"""Recording usage events, exactly once.

Checks that need no data (missing fields, amount, sizes) run here; everything else runs in
the database function ``record_usage_event()`` in one statement: resolving the target,
ownership, the subscription's status, the usageDate window, the idempotency claim, the
``requireBalance`` decision, the event, and the balance move. One round trip per event and
one per batch (besides authentication), and no window where the key is claimed but the
balance has not moved.
"""

from __future__ import annotations

import asyncio
import functools
import uuid
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, Literal

import asyncpg
import uuid_utils

from gateway.billing import owners
from gateway.billing.group_commit import GroupCommitter
from gateway.billing.usage_answers import UsageRecorded as UsageRecorded
from gateway.billing.usage_answers import UsageResult as UsageResult
from gateway.billing.usage_answers import batch_answers, parse_id, rows_answers, whole_answers
from gateway.billing.usage_answers import usage_result as usage_result
from gateway.billing.usage_properties import check_properties
from gateway.callers.auth import Caller
from gateway.errors import UserError, invalid, not_found
from gateway.settings import Settings
from gateway.storage.db import Database

TargetKind = Literal["priceId", "priceSlug", "usageMeterId", "usageMeterSlug"]
MAX_TRANSACTION_ID = 255
MAX_AMOUNT = 2**31 - 1
_RETRIES = 3


@dataclass(slots=True)  # not frozen: made once per event (as BalanceRow, records.py)
class UsageInput:
    target_kind: TargetKind
    target: str
    amount: int | None = None
    subscription_id: str | None = None
    transaction_id: str | None = None
    usage_date: datetime | None = None
    properties: Any = None
    require_balance: bool = False


@lru_cache(maxsize=4096)
def _canonical_id(text: str) -> str:
    """An id as given, in canonical form (the events of a batch name few subscriptions);
    ValueError when it is none (not cached)."""
    return str(uuid.UUID(text))


def _prepare(caller: Caller, item: UsageInput, settings: Settings) -> dict[str, Any] | UserError:
    """Validate what needs no data and apply the caller's defaults."""
    if caller.is_secret_key and (
        item.subscription_id is None or item.transaction_id is None or item.amount is None
    ):
        missing = [
            name
            for name, value in (
                ("subscriptionId", item.subscription_id),
                ("transactionId", item.transaction_id),
                ("amount", item.amount),
            )
            if value is None
        ]
        if missing:
            return invalid(
                "a secret key must give " + ", ".join(missing) + " explicitly",
                "input",
                missing[0],
            )
    amount = 1 if item.amount is None else item.amount
    if amount <= 0 or amount > MAX_AMOUNT:
        return invalid("amount must be a positive integer", "input", "amount")
    transaction_id = item.transaction_id
    if transaction_id is None:
        transaction_id = f"gen_{uuid_utils.uuid7()}"
    elif not transaction_id or transaction_id.isspace() or len(transaction_id) > MAX_TRANSACTION_ID:
        # (not .strip(): blank means empty or only what strip() removes, without the copy)
        return invalid(
            f"transactionId must be 1 to {MAX_TRANSACTION_ID} characters", "input", "transactionId"
        )
    subscription_id: str | None = None
    if item.subscription_id is not None:
        try:
            subscription_id = _canonical_id(item.subscription_id)
        except ValueError:
            return not_found(f"no subscription {item.subscription_id}", "input", "subscriptionId")
    if item.target_kind in ("priceId", "usageMeterId"):
        try:
            uuid.UUID(item.target)
        except ValueError:
            return not_found(
                f"no {item.target_kind[:-2]} {item.target}", "input", "target", item.target_kind
            )
    properties = None
    if item.properties is not None:
        properties = check_properties(item.properties, settings)
        if isinstance(properties, UserError):
            return properties
    usage_date = item.usage_date
    if usage_date is not None and usage_date.tzinfo is None:
        usage_date = usage_date.replace(tzinfo=UTC)
    return {
        "event_id": str(uuid_utils.uuid7()),
        "subscription_id": subscription_id,
        "target_kind": item.target_kind,
        "target": item.target,
        "amount": amount,
        "transaction_id": transaction_id,
        "usage_date": None if usage_date is None else usage_date.isoformat(),
        "properties": properties,
        "require_balance": item.require_balance,
    }


async def _with_retry(call: Any) -> Any:
    """Retry a whole statement after a deadlock: it rolled back, and replays are idempotent."""
    for attempt in range(_RETRIES):
        try:
            return await call()
        except (asyncpg.DeadlockDetectedError, asyncpg.SerializationError):
            if attempt == _RETRIES - 1:
                raise
            await asyncio.sleep(0.01 * (attempt + 1))
    raise AssertionError("unreachable")


def _intervals(settings: Settings) -> Intervals:
    return (
        timedelta(days=settings.gateway_backdating_days),
        timedelta(seconds=settings.gateway_future_tolerance_seconds),
    )


Intervals = tuple[timedelta, timedelta]
# What a group of events shares: the caller's customer (None for a secret key), as the batch
# statement takes it, and the usageDate window.
GroupKey = tuple[uuid.UUID | None, Intervals]


def _writer_key_of(customer_id: uuid.UUID | None, prepared: dict[str, Any]) -> str:
    owner = prepared["subscription_id"] or f"customer:{customer_id}"
    return f"{owner}/{prepared['target_kind']}:{prepared['target']}"


def _subscription_uuid(prepared: dict[str, Any]) -> uuid.UUID | None:
    sub_id = prepared["subscription_id"]
    return None if sub_id is None else parse_id(sub_id)


def _no_subscription(prepared: dict[str, Any]) -> UserError:
    return not_found(f"no subscription {prepared['subscription_id']}", "input", "subscriptionId")


async def _record_one(db: Database, key: GroupKey, prepared: dict[str, Any]) -> UsageResult:
    """One event, one statement: record_usage_event(), for the customer whose usage it is
    (gateway.billing.owners): the function runs on that customer's rows only."""
    customer_id, (backdating, future) = key
    subscription_id = prepared["subscription_id"]
    usage_date = prepared["usage_date"]
    sub_id = _subscription_uuid(prepared)
    owner = customer_id or (None if sub_id is None else await owners.subscription_owner(db, sub_id))
    if owner is None:
        return _no_subscription(prepared)

    async def call() -> Any:
        return await db.fetchval(
            "SELECT record_usage_event($1::uuid, $2::uuid, $3::uuid, $4::uuid, $5, $6, $7, $8,"
            " $9::timestamptz, $10::jsonb, $11, $12, $13)",
            owner,
            uuid.UUID(prepared["event_id"]),
            customer_id,
            None if subscription_id is None else uuid.UUID(subscription_id),
            prepared["target_kind"],
            prepared["target"],
            prepared["amount"],
            prepared["transaction_id"],
            None if usage_date is None else datetime.fromisoformat(usage_date),
            prepared["properties"],
            prepared["require_balance"],
            backdating,
            future,
        )

    async with db.writers.hold([_writer_key_of(customer_id, prepared)]):
        return usage_result(await _with_retry(call))


async def _record_many(
    db: Database, key: GroupKey, payload: list[dict[str, Any]], lock_timeout: Any = None
) -> list[UsageResult]:
    """Prepared events in one statement: one result per event, in order, each as alone (field
    paths without the index). ``lock_timeout``: group commit's bound on lock waits."""
    customer_id, (backdating, future) = key
    writer_keys = [_writer_key_of(customer_id, p) for p in payload]
    if len(set(writer_keys)) < 2:
        lock_timeout = None  # one balance row: nothing to tell apart by giving up early
    results: list[UsageResult | None] = [None] * len(payload)
    groups, missing = await owners.group_by_customer(
        db, customer_id, [_subscription_uuid(p) for p in payload]
    )
    for index in missing:
        results[index] = _no_subscription(payload[index])
    customers = sorted(groups)  # one lock order: customer, then (subscription, meter) in SQL
    if db.distributed:
        positions = [groups[c] for c in customers]
    else:
        positions = [[i for c in customers for i in groups[c]]]

    async def call() -> list[tuple[int, int, dict[str, Any]]]:
        if db.distributed and len(customers) == 1:
            return rows_answers(
                await db.fetch(
                    "SELECT 1 AS customer_position, item_position, result"
                    " FROM record_usage_events($1::uuid, $2::jsonb, $3::uuid, $4, $5)",
                    customers[0],
                    [payload[i] for i in positions[0]],
                    customer_id,
                    backdating,
                    future,
                )
            )
        if db.distributed:
            return rows_answers(
                await db.fetch(
                    _BATCH_BY_CUSTOMER_SQL,
                    customers,
                    [[payload[i] for i in group] for group in positions],
                    customer_id,
                    backdating,
                    future,
                )
            )
        return batch_answers(
            await db.fetchrow(
                _BATCH_SQL,
                customers,
                [
                    {**payload[i], "customer_id": text}
                    for c, text in ((c, str(c)) for c in customers)  # str() once per customer
                    for i in groups[c]
                ],
                customer_id,
                backdating,
                future,
                lock_timeout,
            )
        )

    if customers:
        async with db.writers.hold(writer_keys):
            rows = await _with_retry(call)
        for index, data in whole_answers(rows, positions, payload).items():
            results[index] = usage_result(data)
    return [r for r in results if r is not None]


# How a batch of several customers is sent. On one PostgreSQL: record_usage_batch() of all of
# them, one set-based statement for the whole batch (its fixed cost, about a millisecond, is
# paid once). On Citus (Database.distributed) a statement must stay on one customer's shard:
# record_usage_events() once per customer, still in one statement (one round trip). 100 events
# over 25 customers, one PostgreSQL: 0.15 ms of database CPU per event in one call, 0.59 in 25.
# The answers come as one row, positions and one JSON array of the answers: asyncpg decodes
# one JSON value instead of one per event (0.95 -> 0.57 ms of client CPU for bench 2's batch
# of 100). The two aggregates read the rows in the same order.
_BATCH_SQL = (
    "SELECT array_agg(item_position) AS positions, json_agg(result) AS results"
    " FROM record_usage_batch($1::uuid[], $2::jsonb, $3::uuid, $4, $5, $6)"
)
# A group-committed batch waits this long at most for a row lock, then goes again per balance
# row, patiently (split_when): a row locked elsewhere holds back its own events, not others'.
GROUP_LOCK_TIMEOUT = timedelta(milliseconds=100)
_BATCH_BY_CUSTOMER_SQL = """
SELECT g.ord::integer AS customer_position, r.item_position, r.result
  FROM unnest($1::uuid[]) WITH ORDINALITY AS g(customer_id, ord)
  CROSS JOIN LATERAL record_usage_events(g.customer_id, $2::jsonb -> (g.ord::integer - 1),
                                         $3::uuid, $4, $5) r
 ORDER BY g.ord, r.item_position
"""


Committer = GroupCommitter[GroupKey, dict[str, Any], UsageResult]
_committers: weakref.WeakKeyDictionary[Database, dict[Any, Committer]] = weakref.WeakKeyDictionary()


def committer(db: Database, settings: Settings) -> Committer:
    """The process's group committer of single events on ``db``, one per setting of its bounds."""
    bounds = (
        settings.gateway_group_commit_in_flight,
        min(settings.gateway_group_commit_max_events, settings.gateway_max_batch_size),
        settings.gateway_group_commit_max_wait_ms / 1000,
    )
    by_bounds = _committers.setdefault(db, {})
    found = by_bounds.get(bounds)
    if found is None:
        in_flight, max_events, max_wait = bounds
        found = by_bounds[bounds] = GroupCommitter(
            functools.partial(_record_one, db),
            functools.partial(_record_many, db, lock_timeout=GROUP_LOCK_TIMEOUT),
            in_flight=in_flight,
            max_events=max(2, max_events),
            max_queue=max_events * max(1, in_flight) * 4,
            max_wait=max_wait,
            ready=lambda key, prepared: db.writers.free(_writer_key_of(key[0], prepared)),
            split_when=lambda exc: isinstance(exc.__cause__, asyncpg.LockNotAvailableError),
            split_by=lambda key, prepared: _writer_key_of(key[0], prepared),  # its balance row
            patient_batch=functools.partial(_record_many, db),
        )
    return found


async def record_usage_event(
    db: Database, settings: Settings, caller: Caller, item: UsageInput
) -> UsageResult:
    """One event: sent at once when the process has no write in flight, else gathered with
    the others arriving meanwhile into one batch statement (group commit); the answer is the
    same either way."""
    prepared = _prepare(caller, item, settings)
    if isinstance(prepared, UserError):
        return prepared
    return await committer(db, settings).submit(
        (caller.customer_id, _intervals(settings)), prepared
    )


async def record_usage_events(
    db: Database, settings: Settings, caller: Caller, items: Sequence[UsageInput | UserError]
) -> list[UsageResult] | UserError:
    """A batch in one statement; one result per input, in order, each independent.

    An item may be a UserError already (refused at the boundary, its field path given in
    full): it is answered as it is and the others are recorded.
    """
    if len(items) > settings.gateway_max_batch_size:
        return invalid(
            f"a batch holds at most {settings.gateway_max_batch_size} events (got {len(items)})",
            "input",
        )
    results: list[UsageResult | None] = [None] * len(items)
    valid: list[tuple[int, dict[str, Any]]] = []
    for index, item in enumerate(items):
        if isinstance(item, UserError):
            results[index] = item
            continue
        prepared = _prepare(caller, item, settings)
        if isinstance(prepared, UserError):
            field = prepared.field
            path = ["input", str(index), *(field[1:] if field else [])]
            results[index] = UserError(prepared.code, prepared.message, path, prepared.extra)
        else:
            valid.append((index, prepared))
    if valid:
        key = (caller.customer_id, _intervals(settings))
        recorded = await _record_many(db, key, [p for _, p in valid])
        for (index, _), result in zip(valid, recorded, strict=True):
            if isinstance(result, UserError) and result.field:
                result = UserError(
                    result.code,
                    result.message,
                    ["input", str(index), *result.field[1:]],
                    result.extra,
                )
            results[index] = result
    return [r for r in results if r is not None]


# Shared with gateway.reservations, which records usage by these same rules.
prepare_usage = _prepare
with_retry = _with_retry
usage_intervals = _intervals
