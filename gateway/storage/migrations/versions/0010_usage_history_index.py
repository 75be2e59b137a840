"""usage history: index the usage events by (customer_id, id)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01

``Billing.usageEvents`` lists a customer's events newest first, keyset-paginated on the
time-ordered id; this index makes a page an index range scan from its cursor. It is built
inside the migration's transaction (which holds the migration lock, so processes starting
together still migrate once); building it locks out writes to ``usage_events`` meanwhile.
On a large table, build it beforehand without blocking, then migrate (IF NOT EXISTS skips it):
``CREATE INDEX CONCURRENTLY usage_events_customer_history_idx ON usage_events
(customer_id, id)``. No function changes.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "usage_events_customer_history_idx",
        "usage_events",
        ["customer_id", "id"],
        unique=False,
        if_not_exists=True,
    )


def downgrade() -> None:
    op.drop_index("usage_events_customer_history_idx", table_name="usage_events")
