"""keys by customer: every key of a customer's rows includes customer_id

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-01

The schema in the form that distributes by customer (gateway/storage/distribution.py): on
Citus a primary key, unique constraint or foreign key of a distributed table must include
the distribution column. Existing data is transformed in place:

- ``customer_external_ids`` (external id -> customer) is created and filled from
  ``customers``; it now carries the global uniqueness of ``customers.external_id``, which
  keeps a plain index.
- ``webhook_deliveries`` and ``webhook_attempts`` get ``customer_id``, filled from their
  alert event and delivery.
- Primary keys become (customer_id, ...); the unique keys of credit grants, alert events and
  deliveries get customer_id first; foreign keys to ``subscriptions(id)``,
  ``usage_alert_events(id)`` and ``webhook_deliveries(id)`` become (customer_id, id) pairs.
  A row whose customer_id differs from its subscription's makes the migration fail (no
  such row is ever written).
- Indexes on ``id`` (hash for usage events) keep the look-ups by id alone (a subscription's, an event's, a
  reservation's owner) an index probe; ``usage_events_customer_history_idx`` (customer_id,
  id) is the new primary key's index and goes.
- ``usage_alerts.customer_id`` loses its foreign key: alerts are the merchant's (a
  reference table), and a reference table cannot reference a distributed one.

The tables are rewritten under an exclusive lock inside the migration's transaction: on a
large database, plan the downtime. The functions follow in 0016.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (table, old primary key columns after customer_id) of the tables whose key gains it.
PRIMARY_KEYS = (
    ("subscriptions", "id"),
    ("credit_grants", "id"),
    ("meter_balances", "subscription_id, usage_meter_id"),
    ("usage_totals", "subscription_id, usage_meter_id, period_start, price_id"),
    ("usage_distinct_keys", "subscription_id, usage_meter_id, period_start, properties_hash"),
    ("usage_events", "id"),
    ("usage_reservations", "id"),
    ("usage_alert_events", "id"),
    ("webhook_deliveries", "id"),
    ("webhook_attempts", "id"),
)
SUBSCRIPTION_FKS = (
    "credit_grants",
    "meter_balances",
    "usage_totals",
    "usage_distinct_keys",
    "usage_events",
    "usage_reservations",
    "usage_alert_events",
)
# (table, old unique columns, name)
UNIQUES = (
    ("credit_grants", "subscription_id, feature_id, granted_at", "credit_grants_issue_key"),
    (
        "usage_alert_events",
        "alert_id, subscription_id, period_start, type",
        "usage_alert_events_once_key",
    ),
    ("webhook_deliveries", "event_id, endpoint_id", "webhook_deliveries_event_endpoint_key"),
)
ID_INDEXES = ("subscriptions", "usage_events", "usage_reservations", "usage_alert_events")


def _run(script: str) -> None:
    """Statements one by one (asyncpg prepares each execute: one statement at a time)."""
    for statement in script.split(";"):
        if statement.strip():
            op.execute(statement)


def upgrade() -> None:
    _run(
        """
        CREATE TABLE customer_external_ids (
          external_id text PRIMARY KEY,
          customer_id uuid NOT NULL);
        INSERT INTO customer_external_ids (external_id, customer_id)
        SELECT external_id, id FROM customers;
        ALTER TABLE customers DROP CONSTRAINT customers_external_id_key;
        CREATE INDEX ix_customers_external_id ON customers (external_id);

        ALTER TABLE usage_alerts DROP CONSTRAINT usage_alerts_customer_id_fkey;

        ALTER TABLE webhook_attempts DROP CONSTRAINT webhook_attempts_delivery_id_fkey;
        ALTER TABLE webhook_deliveries DROP CONSTRAINT webhook_deliveries_event_id_fkey;
        ALTER TABLE webhook_deliveries ADD COLUMN customer_id uuid;
        UPDATE webhook_deliveries d SET customer_id = e.customer_id
          FROM usage_alert_events e WHERE e.id = d.event_id;
        ALTER TABLE webhook_deliveries ALTER COLUMN customer_id SET NOT NULL,
          ADD CONSTRAINT webhook_deliveries_customer_id_fkey
            FOREIGN KEY (customer_id) REFERENCES customers (id);
        ALTER TABLE webhook_attempts ADD COLUMN customer_id uuid;
        UPDATE webhook_attempts a SET customer_id = d.customer_id
          FROM webhook_deliveries d WHERE d.id = a.delivery_id;
        ALTER TABLE webhook_attempts ALTER COLUMN customer_id SET NOT NULL,
          ADD CONSTRAINT webhook_attempts_customer_id_fkey
            FOREIGN KEY (customer_id) REFERENCES customers (id);
        """
    )
    for table in SUBSCRIPTION_FKS:
        op.execute(f"ALTER TABLE {table} DROP CONSTRAINT {table}_subscription_id_fkey")
    for table, columns, name in UNIQUES:
        op.execute(
            f"ALTER TABLE {table} DROP CONSTRAINT {name},"
            f" ADD CONSTRAINT {name} UNIQUE (customer_id, {columns})"
        )
    for table, columns in PRIMARY_KEYS:
        op.execute(
            f"ALTER TABLE {table} DROP CONSTRAINT {table}_pkey,"
            f" ADD CONSTRAINT {table}_pkey PRIMARY KEY (customer_id, {columns})"
        )
    for table in ID_INDEXES:
        # Equality only: a hash index cannot serve the history's order or ranges of id,
        # which are the primary key's (customer_id, id).
        using = " USING hash" if table == "usage_events" else ""
        op.execute(f"CREATE INDEX {table}_id_idx ON {table}{using} (id)")
    op.execute("DROP INDEX usage_events_customer_history_idx")
    for table in SUBSCRIPTION_FKS:
        op.execute(
            f"ALTER TABLE {table} ADD CONSTRAINT {table}_subscription_fkey"
            " FOREIGN KEY (customer_id, subscription_id)"
            " REFERENCES subscriptions (customer_id, id)"
        )
    _run(
        """
        ALTER TABLE webhook_deliveries ADD CONSTRAINT webhook_deliveries_event_fkey
          FOREIGN KEY (customer_id, event_id) REFERENCES usage_alert_events (customer_id, id);
        ALTER TABLE webhook_attempts ADD CONSTRAINT webhook_attempts_delivery_fkey
          FOREIGN KEY (customer_id, delivery_id) REFERENCES webhook_deliveries (customer_id, id);
        """
    )


def downgrade() -> None:
    _run(
        """
        ALTER TABLE webhook_attempts DROP CONSTRAINT webhook_attempts_delivery_fkey;
        ALTER TABLE webhook_deliveries DROP CONSTRAINT webhook_deliveries_event_fkey;
        """
    )
    for table in SUBSCRIPTION_FKS:
        op.execute(f"ALTER TABLE {table} DROP CONSTRAINT {table}_subscription_fkey")
    op.execute("CREATE INDEX usage_events_customer_history_idx ON usage_events (customer_id, id)")
    for table in ID_INDEXES:
        op.execute(f"DROP INDEX {table}_id_idx")
    for table, columns in PRIMARY_KEYS:
        op.execute(
            f"ALTER TABLE {table} DROP CONSTRAINT {table}_pkey,"
            f" ADD CONSTRAINT {table}_pkey PRIMARY KEY ({columns})"
        )
    for table, columns, name in UNIQUES:
        op.execute(
            f"ALTER TABLE {table} DROP CONSTRAINT {name}, ADD CONSTRAINT {name} UNIQUE ({columns})"
        )
    for table in SUBSCRIPTION_FKS:
        op.execute(
            f"ALTER TABLE {table} ADD CONSTRAINT {table}_subscription_id_fkey"
            " FOREIGN KEY (subscription_id) REFERENCES subscriptions (id)"
        )
    _run(
        """
        ALTER TABLE webhook_attempts DROP COLUMN customer_id;
        ALTER TABLE webhook_deliveries DROP COLUMN customer_id;
        ALTER TABLE webhook_deliveries ADD CONSTRAINT webhook_deliveries_event_id_fkey
          FOREIGN KEY (event_id) REFERENCES usage_alert_events (id);
        ALTER TABLE webhook_attempts ADD CONSTRAINT webhook_attempts_delivery_id_fkey
          FOREIGN KEY (delivery_id) REFERENCES webhook_deliveries (id);
        ALTER TABLE usage_alerts ADD CONSTRAINT usage_alerts_customer_id_fkey
          FOREIGN KEY (customer_id) REFERENCES customers (id);
        DROP INDEX ix_customers_external_id;
        ALTER TABLE customers ADD CONSTRAINT customers_external_id_key UNIQUE (external_id);
        DROP TABLE customer_external_ids;
        """
    )
