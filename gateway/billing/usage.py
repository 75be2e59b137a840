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
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, Literal

import asyncpg
import orjson
import uuid_utils

from gateway.billing import owners
from gateway.billing.balances import balance_from_json
from gateway.billing.records import BalanceRow
from gateway.callers.auth import Caller
from gateway.errors import ErrorCode, UserError, invalid, not_found
from gateway.settings import Settings
from gateway.storage.db import Database

TargetKind = Literal["priceId", "priceSlug", "usageMeterId", "usageMeterSlug"]
MAX_TRANSACTION_ID = 255
MAX_AMOUNT = 2**31 - 1
_RETRIES = 3


@dataclass(frozen=True)
class UsageInput:
    target_kind: TargetKind
    target: str
    amount: int | None = None
    subscription_id: str | None = None
    transaction_id: str | None = None
    usage_date: datetime | None = None
    properties: Any = None
    require_balance: bool = False


@dataclass(frozen=True)
class UsageRecorded:
    # The event as record_usage_event() returns it: JSON with canonical ids, read as is by
    # the answer (parsing every id into uuid.UUID cost a fifth of a batch's server CPU).
    event_data: dict[str, Any]
    replayed: bool
    balance: BalanceRow | None


UsageResult = UsageRecorded | UserError


@lru_cache(maxsize=4096)
def _uuid(text: str) -> uuid.UUID:
    """A parsed id that recurs across results (pricing models, subscriptions, meters)."""
    return uuid.UUID(text)


def canonical_json(value: Any) -> Any:
    """JSON with every integral number written as an integer (1.0 -> 1).

    PostgreSQL's jsonb treats 1 and 1.0 as equal but keeps their text apart; distinct
    property sets are keyed by text, so equal sets must have one text.
    """
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: canonical_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [canonical_json(v) for v in value]
    return value


def json_depth(value: Any, limit: int) -> int:
    """How deep a JSON value nests (a scalar is 0, {} is 1), counted up to ``limit + 1``.

    Iterative, and it stops past the limit: the value may be nested as deep as the request
    parser allowed, deeper than Python's recursion limit and orjson's encoder accept.
    """
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            depth += 1
            deepest = max(deepest, depth)
            if deepest > limit:
                return deepest
            stack.extend(
                (inner, depth) for inner in (item.values() if isinstance(item, dict) else item)
            )
    return deepest


def check_properties(properties: Any, settings: Settings) -> Any:
    """Event properties as stored (integral numbers canonical), or a UserError."""
    if properties is not None:
        if not isinstance(properties, dict):
            return invalid("properties must be a JSON object", "input", "properties")
        depth = settings.gateway_max_properties_depth
        if json_depth(properties, depth) > depth:
            return invalid(
                f"properties must nest at most {depth} levels deep", "input", "properties"
            )
        properties = canonical_json(properties)
        try:
            size = len(orjson.dumps(properties))
        except orjson.JSONEncodeError:  # e.g. an integer beyond 64 bits
            return invalid(
                "properties must be JSON that PostgreSQL can store (integers of at most 64 bits)",
                "input",
                "properties",
            )
        if size > settings.gateway_max_properties_bytes:
            return invalid(
                f"properties must be at most {settings.gateway_max_properties_bytes} bytes"
                f" of JSON (got {size})",
                "input",
                "properties",
            )
    return properties


def _prepare(caller: Caller, item: UsageInput, settings: Settings) -> dict[str, Any] | UserError:
    """Validate what needs no data and apply the caller's defaults."""
    if caller.is_secret_key:
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
    elif not transaction_id.strip() or len(transaction_id) > MAX_TRANSACTION_ID:
        return invalid(
            f"transactionId must be 1 to {MAX_TRANSACTION_ID} characters", "input", "transactionId"
        )
    subscription_id: uuid.UUID | None = None
    if item.subscription_id is not None:
        try:
            subscription_id = uuid.UUID(item.subscription_id)
        except ValueError:
            return not_found(f"no subscription {item.subscription_id}", "input", "subscriptionId")
    if item.target_kind in ("priceId", "usageMeterId"):
        try:
            uuid.UUID(item.target)
        except ValueError:
            return not_found(
                f"no {item.target_kind[:-2]} {item.target}", "input", "target", item.target_kind
            )
    properties = check_properties(item.properties, settings)
    if isinstance(properties, UserError):
        return properties
    usage_date = item.usage_date
    if usage_date is not None and usage_date.tzinfo is None:
        usage_date = usage_date.replace(tzinfo=UTC)
    return {
        "event_id": str(uuid_utils.uuid7()),
        "subscription_id": None if subscription_id is None else str(subscription_id),
        "target_kind": item.target_kind,
        "target": item.target,
        "amount": amount,
        "transaction_id": transaction_id,
        "usage_date": None if usage_date is None else usage_date.isoformat(),
        "properties": properties,
        "require_balance": item.require_balance,
    }


def _result(data: dict[str, Any]) -> UsageResult:
    status = data["status"]
    if status == "error":
        code = ErrorCode(data["code"])
        extra: dict[str, Any] = {}
        if code is ErrorCode.IDEMPOTENCY_CONFLICT:
            extra["existing_event"] = data["event"]  # JSON, as UsageRecorded.event_data
        elif code is ErrorCode.INSUFFICIENT_BALANCE:
            extra = {
                "meter_slug": data["meter_slug"],
                "meter_id": uuid.UUID(data["meter_id"]),
                "available": int(data["available"]),
                "required": int(data["required"]),
                "pricing_model_id": uuid.UUID(data["pricing_model_id"]),
                "product_id": uuid.UUID(data["product_id"]),
            }
        return UserError(code, data["message"], data["field"], extra)
    pricing_model_id = _uuid(data["pricing_model_id"])
    balance = data.get("balance")
    return UsageRecorded(
        event_data=data["event"],
        replayed=status == "replayed",
        balance=None if balance is None else balance_from_json(balance, pricing_model_id, _uuid),
    )


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


def _subscription_uuid(prepared: dict[str, Any]) -> uuid.UUID | None:
    sub_id = prepared["subscription_id"]
    return None if sub_id is None else _uuid(sub_id)


def _no_subscription(prepared: dict[str, Any]) -> UserError:
    return not_found(f"no subscription {prepared['subscription_id']}", "input", "subscriptionId")


def _writer_key(caller: Caller, prepared: dict[str, Any]) -> str:
    """The (subscription, meter) an event locks, as far as known before the database resolves
    it (gateway.storage.isolation): one stuck balance row cannot take every connection."""
    owner = prepared["subscription_id"] or f"customer:{caller.customer_id}"
    return f"{owner}/{prepared['target_kind']}:{prepared['target']}"


def _intervals(settings: Settings) -> tuple[timedelta, timedelta]:
    return (
        timedelta(days=settings.gateway_backdating_days),
        timedelta(seconds=settings.gateway_future_tolerance_seconds),
    )


async def record_usage_event(
    db: Database, settings: Settings, caller: Caller, item: UsageInput
) -> UsageResult:
    prepared = _prepare(caller, item, settings)
    if isinstance(prepared, UserError):
        return prepared
    backdating, future = _intervals(settings)
    # Whose usage (gateway.billing.owners): the function runs on that customer's rows only.
    customer_id = await owners.usage_owner(db, caller, _subscription_uuid(prepared))
    if customer_id is None:
        return _no_subscription(prepared)

    async def call() -> Any:
        return await db.fetchval(
            "SELECT record_usage_event($1::uuid, $2::uuid, $3::uuid, $4::uuid, $5, $6, $7, $8,"
            " $9::timestamptz, $10::jsonb, $11, $12, $13)",
            customer_id,
            uuid.UUID(prepared["event_id"]),
            caller.customer_id,
            None if prepared["subscription_id"] is None else uuid.UUID(prepared["subscription_id"]),
            prepared["target_kind"],
            prepared["target"],
            prepared["amount"],
            prepared["transaction_id"],
            None if item.usage_date is None else datetime.fromisoformat(prepared["usage_date"]),
            prepared["properties"],
            prepared["require_balance"],
            backdating,
            future,
        )

    async with db.writers.hold([_writer_key(caller, prepared)]):
        return _result(await _with_retry(call))


# A batch of several customers' events: record_usage_events() once per customer, in one
# statement (one round trip; each call touches one customer's rows).
_BATCH_BY_CUSTOMER_SQL = """
SELECT g.ord::integer AS customer_position, r.item_position, r.result
  FROM unnest($1::uuid[]) WITH ORDINALITY AS g(customer_id, ord)
  CROSS JOIN LATERAL record_usage_events(g.customer_id, $2::jsonb -> (g.ord::integer - 1),
                                         $3::uuid, $4, $5) r
 ORDER BY g.ord, r.item_position
"""


async def _customer_groups(
    db: Database,
    caller: Caller,
    valid: list[tuple[int, dict[str, Any]]],
    results: list[UsageResult | None],
) -> dict[uuid.UUID, list[tuple[int, dict[str, Any]]]]:
    """A batch's valid items by customer (gateway.billing.owners); an item whose subscription
    does not exist is answered NOT_FOUND here."""
    found: dict[uuid.UUID, uuid.UUID] = {}
    if caller.customer_id is None:
        subs = {s for _, p in valid if (s := _subscription_uuid(p)) is not None}
        found = await owners.subscription_owners(db, subs)
    groups: dict[uuid.UUID, list[tuple[int, dict[str, Any]]]] = {}
    for index, prepared in valid:
        sub_id = _subscription_uuid(prepared)
        owner = caller.customer_id or (None if sub_id is None else found.get(sub_id))
        if owner is None:
            error = _no_subscription(prepared)
            results[index] = UserError(
                error.code, error.message, ["input", str(index), "subscriptionId"]
            )
        else:
            groups.setdefault(owner, []).append((index, prepared))
    return groups


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
    groups = await _customer_groups(db, caller, valid, results)
    if groups:
        backdating, future = _intervals(settings)
        customers = sorted(groups)  # one lock order for every batch: customer, then
        group_items = [groups[c] for c in customers]  # (subscription, meter) in the function

        async def call() -> Any:
            if len(customers) == 1:
                return await db.fetch(
                    "SELECT 1 AS customer_position, item_position, result"
                    " FROM record_usage_events($1::uuid, $2::jsonb, $3::uuid, $4, $5)",
                    customers[0],
                    [p for _, p in group_items[0]],
                    caller.customer_id,
                    backdating,
                    future,
                )
            return await db.fetch(
                _BATCH_BY_CUSTOMER_SQL,
                customers,
                [[p for _, p in group] for group in group_items],
                caller.customer_id,
                backdating,
                future,
            )

        async with db.writers.hold(_writer_key(caller, p) for _, p in valid):
            rows = await _with_retry(call)
        for row in rows:
            index = group_items[row["customer_position"] - 1][row["item_position"] - 1][0]
            result = _result(row["result"])
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
usage_result = _result
with_retry = _with_retry
usage_intervals = _intervals
