"""Column helpers shared by the table modules (``catalog_tables``, ``customer_tables``,
``usage_tables``, ``reservation_tables``, ``alert_tables``): ids are UUIDv7 from the
database, timestamps are ``timestamptz``."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import UUID
from sqlmodel import Field

NOW = sa.text("now()")
UUID_V7 = sa.text("uuid_v7()")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _id() -> Any:
    return Field(
        default=None,
        sa_column=sa.Column(UUID(as_uuid=True), primary_key=True, server_default=UUID_V7),
    )


def _fk(target: str, *, nullable: bool = False, index: bool = False) -> Any:
    return Field(
        default=None,
        sa_column=sa.Column(
            UUID(as_uuid=True), sa.ForeignKey(target), nullable=nullable, index=index
        ),
    )


def _owner() -> Any:
    """``customer_id`` of a customer-scoped table: the distribution column
    (gateway.storage.distribution), first in every key of the table."""
    return Field(
        default=None,
        sa_column=sa.Column(UUID(as_uuid=True), sa.ForeignKey("customers.id"), nullable=False),
    )


def _owned_id() -> Any:
    """The row's own id in a customer-scoped table: UUIDv7 from the database (no global
    sequence), unique with ``customer_id``: the primary key is (customer_id, id)."""
    return Field(
        default=None,
        sa_column=sa.Column(UUID(as_uuid=True), nullable=False, server_default=UUID_V7),
    )


def _key(*columns: str, table: str) -> sa.PrimaryKeyConstraint:
    """A customer-scoped table's primary key: customer_id first."""
    return sa.PrimaryKeyConstraint("customer_id", *columns, name=f"{table}_pkey")


def _subscription_fk(table: str) -> sa.ForeignKeyConstraint:
    """A customer-scoped row's subscription: (customer_id, subscription_id), the customer in
    the same position on both sides."""
    return sa.ForeignKeyConstraint(
        ["customer_id", "subscription_id"],
        ["subscriptions.customer_id", "subscriptions.id"],
        name=f"{table}_subscription_fkey",
    )


def _uuid(*, nullable: bool = False) -> Any:
    return Field(default=None, sa_column=sa.Column(UUID(as_uuid=True), nullable=nullable))


def _text(*, nullable: bool = False) -> Any:
    return Field(default=None, sa_column=sa.Column(sa.Text, nullable=nullable))


def _bigint(*, nullable: bool = False, default: int | None = None) -> Any:
    server_default = sa.text(str(default)) if default is not None else None
    return Field(
        default=default,
        sa_column=sa.Column(sa.BigInteger, nullable=nullable, server_default=server_default),
    )


def _int(*, nullable: bool = False) -> Any:
    return Field(default=None, sa_column=sa.Column(sa.Integer, nullable=nullable))


def _bool(default: bool) -> Any:
    return Field(
        default=default,
        sa_column=sa.Column(
            sa.Boolean, nullable=False, server_default=sa.text("true" if default else "false")
        ),
    )


def _ts(*, nullable: bool = False, now: bool = False) -> Any:
    return Field(
        default=None,
        sa_column=sa.Column(
            sa.DateTime(timezone=True), nullable=nullable, server_default=NOW if now else None
        ),
    )
