"""The schema distributes by customer: the catalog of the migrated database, read.

On Citus (distributed by customer, gateway/storage/distribution.py) a primary key, unique
constraint or unique index of a distributed table must include the distribution column, a
foreign key between distributed tables must join them on it, in the same position on both
sides, and a reference table cannot reference a distributed one. These rules are checked
here on plain PostgreSQL, so that a new key or table that would not distribute fails the
suite the day it is written.
"""

from __future__ import annotations

from typing import Any

from gateway.storage.db import Database
from gateway.storage.distribution import CUSTOMER_SCOPED, LOOKUPS, REFERENCE

# Every key and unique index: (table, name, kind, its columns in order).
KEYS_SQL = """
SELECT c.relname AS table_name, i.relname AS name,
       CASE WHEN x.indisprimary THEN 'primary key' ELSE 'unique' END AS kind,
       array_agg(a.attname ORDER BY k.ord) AS columns
  FROM pg_index x
  JOIN pg_class c ON c.oid = x.indrelid
  JOIN pg_class i ON i.oid = x.indexrelid
  CROSS JOIN LATERAL unnest(x.indkey) WITH ORDINALITY AS k(attnum, ord)
  LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
 WHERE c.relnamespace = $1::regnamespace AND c.relkind IN ('r', 'p')
   AND (x.indisunique OR x.indisprimary)
 GROUP BY c.relname, i.relname, x.indisprimary
"""

# Every foreign key: (table, name, referenced table, columns, referenced columns).
FOREIGN_KEYS_SQL = """
SELECT c.relname AS table_name, f.conname AS name, r.relname AS referenced,
       array_agg(a.attname ORDER BY k.ord) AS columns,
       array_agg(ra.attname ORDER BY k.ord) AS referenced_columns
  FROM pg_constraint f
  JOIN pg_class c ON c.oid = f.conrelid
  JOIN pg_class r ON r.oid = f.confrelid
  CROSS JOIN LATERAL unnest(f.conkey, f.confkey) WITH ORDINALITY AS k(attnum, refnum, ord)
  JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
  JOIN pg_attribute ra ON ra.attrelid = r.oid AND ra.attnum = k.refnum
 WHERE f.contype = 'f' AND c.relnamespace = $1::regnamespace
 GROUP BY c.relname, f.conname, r.relname
"""

TABLES_SQL = """
SELECT relname FROM pg_class
 WHERE relnamespace = $1::regnamespace AND relkind IN ('r', 'p') AND NOT relispartition
   AND relname <> 'alembic_version'
"""


def _distribution_column(table: str) -> str | None:
    return CUSTOMER_SCOPED.get(table) or LOOKUPS.get(table)


async def violations(conn: Any, schema: str = "public") -> list[str]:
    """What would keep the schema in ``schema`` from distributing by customer, one line per
    problem (empty: none)."""
    found: list[str] = []
    classified = set(CUSTOMER_SCOPED) | set(LOOKUPS) | set(REFERENCE)
    for row in await conn.fetch(TABLES_SQL, schema):
        if row["relname"] not in classified:
            found.append(f"{row['relname']}: not classified in gateway.storage.distribution")
    for key in await conn.fetch(KEYS_SQL, schema):
        column = _distribution_column(key["table_name"])
        if column is not None and column not in key["columns"]:
            found.append(
                f"{key['table_name']}: {key['kind']} {key['name']} ({', '.join(key['columns'])})"
                f" without {column}"
            )
    for fk in await conn.fetch(FOREIGN_KEYS_SQL, schema):
        table, referenced = fk["table_name"], fk["referenced"]
        pairs = list(zip(fk["columns"], fk["referenced_columns"], strict=True))
        what = f"{table}: foreign key {fk['name']} -> {referenced}"
        if table in REFERENCE and referenced not in REFERENCE:
            found.append(f"{what}: a reference table references a distributed table")
        elif table in LOOKUPS and referenced not in REFERENCE:
            found.append(f"{what}: a lookup table is not co-located with what it references")
        elif table in CUSTOMER_SCOPED and referenced in CUSTOMER_SCOPED:
            wanted = ("customer_id", CUSTOMER_SCOPED[referenced])
            if CUSTOMER_SCOPED[table] != "customer_id" or wanted not in pairs:
                found.append(f"{what} ({', '.join(fk['columns'])}) not joined on customer_id")
        elif table in CUSTOMER_SCOPED and referenced in LOOKUPS:
            found.append(f"{what}: references a table distributed by another column")
    return found


async def test_every_key_of_a_customers_rows_includes_customer_id(db: Database) -> None:
    async with db.pool.acquire() as conn:
        assert await violations(conn) == []


async def test_the_check_finds_each_kind_of_violation(db: Database) -> None:
    """The same check on a schema holding one of each mistake, named like the real tables
    (the schema's own tables shadow nothing: the check reads one schema)."""
    async with db.pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        try:
            await conn.execute("CREATE SCHEMA distribution_probe")
            await conn.execute(
                """
                CREATE TABLE distribution_probe.customers (id uuid PRIMARY KEY,
                  external_id text UNIQUE);
                CREATE TABLE distribution_probe.subscriptions (customer_id uuid, id uuid,
                  PRIMARY KEY (id), UNIQUE (customer_id, id));
                CREATE TABLE distribution_probe.usage_events (customer_id uuid, id uuid,
                  subscription_id uuid REFERENCES distribution_probe.subscriptions (id),
                  PRIMARY KEY (customer_id, id));
                CREATE TABLE distribution_probe.credit_grants (customer_id uuid, id uuid,
                  subscription_id uuid, PRIMARY KEY (customer_id, id),
                  FOREIGN KEY (subscription_id, customer_id)
                    REFERENCES distribution_probe.subscriptions (customer_id, id));
                CREATE TABLE distribution_probe.usage_alerts (id uuid PRIMARY KEY,
                  customer_id uuid REFERENCES distribution_probe.customers (id));
                CREATE TABLE distribution_probe.stray (id uuid PRIMARY KEY)
                """
            )
            found = sorted(await violations(conn, "distribution_probe"))
        finally:
            await tx.rollback()
    assert found == [
        "credit_grants: foreign key credit_grants_subscription_id_customer_id_fkey"
        " -> subscriptions (subscription_id, customer_id) not joined on customer_id",
        "customers: unique customers_external_id_key (external_id) without id",
        "stray: not classified in gateway.storage.distribution",
        "subscriptions: primary key subscriptions_pkey (id) without customer_id",
        "usage_alerts: foreign key usage_alerts_customer_id_fkey -> customers:"
        " a reference table references a distributed table",
        "usage_events: foreign key usage_events_subscription_id_fkey -> subscriptions"
        " (subscription_id) not joined on customer_id",
    ]
    # The probe left nothing behind.
    assert await db.fetchval("SELECT to_regnamespace('distribution_probe')") is None


async def test_no_table_is_both_distributed_and_reference() -> None:
    assert not set(CUSTOMER_SCOPED) & set(REFERENCE)
    assert not set(LOOKUPS) & (set(REFERENCE) | set(CUSTOMER_SCOPED))
