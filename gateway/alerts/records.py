"""Rows of the alerts package."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class UsageAlertRow:
    id: uuid.UUID
    pricing_model_id: uuid.UUID
    usage_meter_id: uuid.UUID
    customer_external_id: str | None
    percent_used: float | None
    used_above: int | None
    available_below: int | None

    @classmethod
    def of(cls, record: Any) -> UsageAlertRow:
        return cls(**{name: record[name] for name in cls.__slots__})


@dataclass(frozen=True, slots=True)
class Threshold:
    """Exactly one of the three is set (the input is a @oneOf)."""

    percent_used: float | None = None
    used_above: int | None = None
    available_below: int | None = None
