"""What the reservation functions answer, as plain rows."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gateway.billing.balances import balance_from_json
from gateway.billing.records import BalanceRow


@dataclass(frozen=True, slots=True)
class ReservationRow:
    id: uuid.UUID
    customer_id: uuid.UUID
    subscription_id: uuid.UUID
    usage_meter_id: uuid.UUID
    price_id: uuid.UUID
    transaction_id: str
    amount: int
    status: str  # held, finalized, released, expired (a held row past its expiry reads expired)
    expires_at: datetime
    usage_event_data: dict[str, Any] | None  # the settling event, as record_usage_event() gives it

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ReservationRow:
        return cls(
            id=uuid.UUID(data["id"]),
            customer_id=uuid.UUID(data["customer_id"]),
            subscription_id=uuid.UUID(data["subscription_id"]),
            usage_meter_id=uuid.UUID(data["usage_meter_id"]),
            price_id=uuid.UUID(data["price_id"]),
            transaction_id=data["transaction_id"],
            amount=int(data["amount"]),
            status=data["status"],
            expires_at=datetime.fromisoformat(data["expires_at"]),
            usage_event_data=data.get("usage_event"),
        )


@dataclass(frozen=True)
class UsageReserved:
    reservation: ReservationRow
    replayed: bool
    balance: BalanceRow | None


@dataclass(frozen=True)
class ReservationReleased:
    reservation: ReservationRow
    balance: BalanceRow | None


@dataclass(frozen=True)
class UsageEventVoided:
    event_data: dict[str, Any]
    already_voided: bool
    balance: BalanceRow | None


def balance_of(data: dict[str, Any]) -> BalanceRow | None:
    balance = data.get("balance")
    if balance is None:
        return None
    return balance_from_json(balance, uuid.UUID(data["pricing_model_id"]))
