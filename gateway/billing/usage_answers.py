"""The answers of the usage functions, read into results.

``record_usage_event()``'s JSON answer becomes a ``UsageRecorded`` or a ``UserError``; a batch's
answers come by position, and those of a group recorded together by what differs from the
group's last event (``_record_usage_steady()``, gateway/storage/sql/usage_batches.sql), made
whole here.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from gateway.billing.balances import balance_from_json
from gateway.billing.records import BalanceRow
from gateway.errors import ErrorCode, UserError


@dataclass(slots=True)  # not frozen: made once per answer (as BalanceRow, records.py)
class UsageRecorded:
    # The event as record_usage_event() returns it: JSON with canonical ids, read as is by
    # the answer (parsing every id into uuid.UUID cost a fifth of a batch's server CPU).
    event_data: dict[str, Any]
    replayed: bool
    balance: BalanceRow | None


UsageResult = UsageRecorded | UserError


@lru_cache(maxsize=4096)
def parse_id(text: str) -> uuid.UUID:
    """A parsed id that recurs across results (pricing models, subscriptions, meters)."""
    return uuid.UUID(text)


def usage_result(data: dict[str, Any]) -> UsageResult:
    """record_usage_event()'s JSON answer (and each whole answer of a batch) as a result."""
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
    pricing_model_id = parse_id(data["pricing_model_id"])
    balance = data.get("balance")
    return UsageRecorded(
        event_data=data["event"],
        replayed=status == "replayed",
        balance=None if balance is None else balance_from_json(balance, pricing_model_id, parse_id),
    )


def same_group_answer(
    last: dict[str, Any], prepared: dict[str, Any], data: dict[str, Any]
) -> dict[str, Any]:
    """The whole answer of an event recorded in a group whose answer _record_usage_steady()
    gives as what differs from the group's last event (usage_batches.sql): its price,
    properties and balance figures from ``data``; its id, amount and key as it was sent
    (``prepared``); the rest (the group's ids, period, limit, hold, the batch's time) as
    ``last``, the full answer of the group's last event."""
    properties = data["properties"]
    return {
        **last,
        "event": {
            **last["event"],
            "id": prepared["event_id"],
            "price_id": data["price_id"],
            "amount": prepared["amount"],
            "transaction_id": prepared["transaction_id"],
            "properties": {} if properties is None else properties,
        },
        "balance": {
            **last["balance"],
            "available_balance": data["available_balance"],
            "used_balance": data["used_balance"],
        },
    }


def rows_answers(rows: Sequence[Any]) -> list[tuple[int, int, dict[str, Any]]]:
    """(customer position, item position, answer) of each row of a batch statement's rows."""
    return [(r["customer_position"], r["item_position"], r["result"]) for r in rows]


def batch_answers(row: Any) -> list[tuple[int, int, dict[str, Any]]]:
    """(customer position, item position, answer) of each event of the one row of
    gateway.billing.usage's batch statement (positions, and the answers as one JSON array)."""
    if row["positions"] is None:  # no event recorded nor answered
        return []
    return [(1, p, r) for p, r in zip(row["positions"], row["results"], strict=True)]


def whole_answers(
    answers: Sequence[tuple[int, int, dict[str, Any]]],
    positions: Sequence[Sequence[int]],
    payload: Sequence[dict[str, Any]],
) -> dict[int, dict[str, Any]]:
    """Each event's whole answer by its index in ``payload``: ``answers`` are (customer
    position, item position, answer) and ``positions[customer position - 1][item position -
    1]`` is the index of that event; an answer by difference is made whole from its group's
    last (``same_group_answer``)."""
    by_index: dict[int, dict[str, Any]] = {}
    same_group: list[tuple[int, int]] = []  # (event, its group's last event), by index
    for customer_position, item_position, data in answers:
        at = positions[customer_position - 1]
        index = at[item_position - 1]
        by_index[index] = data
        if "same_group_as" in data:
            same_group.append((index, at[data["same_group_as"] - 1]))
    for index, last in same_group:
        by_index[index] = same_group_answer(by_index[last], payload[index], by_index[index])
    return by_index
