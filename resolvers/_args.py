"""Argument helpers shared by the resolvers."""

from __future__ import annotations

from typing import TypeVar

import strawberry

T = TypeVar("T")


def opt(value: T | None) -> T | None:
    """An optional argument or input field: omitted (UNSET) and null both mean None."""
    return None if value is strawberry.UNSET else value
