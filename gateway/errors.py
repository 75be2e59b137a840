"""Expected failures as data. The schema maps each code to its GraphQL error type."""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass
from typing import Any


class ErrorCode(enum.Enum):
    INVALID_INPUT = "INVALID_INPUT"
    NOT_FOUND = "NOT_FOUND"
    FORBIDDEN = "FORBIDDEN"
    NO_CURRENT_SUBSCRIPTION = "NO_CURRENT_SUBSCRIPTION"
    INSUFFICIENT_BALANCE = "INSUFFICIENT_BALANCE"
    IDEMPOTENCY_CONFLICT = "IDEMPOTENCY_CONFLICT"


@dataclass(frozen=True)
class UserError:
    code: ErrorCode
    message: str
    field: list[str] | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


def invalid(message: str, *path: str) -> UserError:
    return UserError(ErrorCode.INVALID_INPUT, message, list(path) or None)


def not_found(message: str, *path: str) -> UserError:
    return UserError(ErrorCode.NOT_FOUND, message, list(path) or None)


def forbidden(message: str, *path: str) -> UserError:
    return UserError(ErrorCode.FORBIDDEN, message, list(path) or None)


class BadUserInput(Exception):
    """An argument of a query that has no error union (a top-level BAD_USER_INPUT error)."""
