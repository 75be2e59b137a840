"""Customers: creation, batched look-ups and the dashboard's cursor pagination."""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence

import asyncpg

from gateway.billing.paging import HIGHEST_ID, LOWEST_ID, Page, PageRequest, page_of
from gateway.billing.records import CustomerRow
from gateway.errors import UserError, invalid
from gateway.storage.db import Database

_COLUMNS = "id, pricing_model_id, external_id, name, email, created_at"
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def _row(r: asyncpg.Record) -> CustomerRow:
    return CustomerRow(**dict(r))


async def create_customer(
    db: Database, external_id: str, name: str | None, email: str | None
) -> CustomerRow | UserError:
    external_id = external_id.strip()
    if not external_id:
        return invalid("externalId must not be empty", "input", "externalId")
    if len(external_id) > 255:
        return invalid("externalId must be at most 255 characters", "input", "externalId")
    if email is not None and not _EMAIL.match(email):
        return invalid(f"email {email!r} is not an e-mail address", "input", "email")
    # The external id is claimed first (customer_external_ids, its global uniqueness), then
    # the customer written with the claimed id: two statements, one transaction.
    async with db.transaction() as conn:
        customer_id = await conn.fetchval(
            """
            INSERT INTO customer_external_ids (external_id, customer_id)
            SELECT $1, uuid_v7() WHERE EXISTS (SELECT 1 FROM pricing_models WHERE is_default)
            ON CONFLICT (external_id) DO NOTHING
            RETURNING customer_id
            """,
            external_id,
        )
        row = None
        if customer_id is not None:
            row = await conn.fetchrow(
                f"""
                INSERT INTO customers (id, pricing_model_id, external_id, name, email)
                SELECT $1, pm.id, $2, $3, $4 FROM pricing_models pm WHERE pm.is_default
                RETURNING {_COLUMNS}
                """,
                customer_id,
                external_id,
                name,
                email,
            )
    if row is not None:
        return _row(row)
    has_model = await db.fetchval("SELECT EXISTS (SELECT 1 FROM pricing_models WHERE is_default)")
    if not has_model:
        return invalid("no pricing model is set up yet: run setupPricingModel first", "input")
    return invalid(f"a customer with externalId {external_id!r} exists", "input", "externalId")


# Through customer_external_ids (distributed by the external id): the customers are then
# read by their distribution column.
_BY_EXTERNAL_ID_SQL = f"""
WITH known AS (
  SELECT customer_id FROM customer_external_ids WHERE external_id = ANY($1::text[])
)
SELECT {_COLUMNS} FROM customers WHERE id IN (SELECT customer_id FROM known)
"""


async def customers_by_external_id(
    db: Database, external_ids: Sequence[str]
) -> dict[str, CustomerRow]:
    rows = await db.fetch(_BY_EXTERNAL_ID_SQL, list(external_ids))
    return {r["external_id"]: _row(r) for r in rows}


async def customer_by_external_id(db: Database, external_id: str) -> CustomerRow | None:
    return (await customers_by_external_id(db, [external_id])).get(external_id)


async def customers_by_id(db: Database, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, CustomerRow]:
    rows = await db.fetch(f"SELECT {_COLUMNS} FROM customers WHERE id = ANY($1::uuid[])", list(ids))
    return {r["id"]: _row(r) for r in rows}


async def customers_page(db: Database, request: PageRequest) -> Page[CustomerRow]:
    """Customers in creation order (ids are time-ordered), keyset-paginated (gateway.billing.paging)."""
    if request.forward:
        sql = f"SELECT {_COLUMNS} FROM customers WHERE id > $1 ORDER BY id LIMIT $2"
        bound = request.cursor or LOWEST_ID
    else:
        sql = f"SELECT {_COLUMNS} FROM customers WHERE id < $1 ORDER BY id DESC LIMIT $2"
        bound = request.cursor or HIGHEST_ID
    rows = await db.fetch(sql, bound, request.size + 1)
    return page_of([_row(r) for r in rows], request)


async def customer_count(db: Database) -> int:
    """How many customers there are (a dashboard's ``totalCount``)."""
    count: int = await db.fetchval("SELECT count(*) FROM customers")
    return count
