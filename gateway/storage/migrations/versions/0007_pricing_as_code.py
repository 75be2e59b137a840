"""pricing models as code: active flags, archived entries, intervals of usage prices

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01

Flowglad's setup format carries ``active`` on products and features and an interval on usage
prices; the gateway now stores them. Updating a model in place archives what a definition no
longer lists instead of deleting it (usage refers to prices, grants to features), so
products, features and prices get ``archived_at``. The interval check allowed an interval
only on subscription prices; usage prices may now carry one too (single payments still may
not). No function changes.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_INTERVAL_CHECK = (
    "(type = 'subscription') = (interval_unit IS NOT NULL AND interval_count IS NOT NULL)"
)
NEW_INTERVAL_CHECK = (
    "(type <> 'subscription' OR (interval_unit IS NOT NULL AND interval_count IS NOT NULL))"
    " AND (type <> 'single_payment' OR (interval_unit IS NULL AND interval_count IS NULL))"
    " AND ((interval_unit IS NULL) = (interval_count IS NULL))"
)


def upgrade() -> None:
    for table in ("products", "features"):
        op.add_column(
            table,
            sa.Column("active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        )
    for table in ("products", "features", "prices"):
        op.add_column(table, sa.Column("archived_at", sa.DateTime(timezone=True), nullable=True))
    op.drop_constraint("prices_interval_check", "prices", type_="check")
    op.create_check_constraint("prices_interval_check", "prices", NEW_INTERVAL_CHECK)


def downgrade() -> None:
    op.execute("UPDATE prices SET interval_unit = NULL, interval_count = NULL WHERE type = 'usage'")
    op.drop_constraint("prices_interval_check", "prices", type_="check")
    op.create_check_constraint("prices_interval_check", "prices", OLD_INTERVAL_CHECK)
    for table in ("products", "features", "prices"):
        op.drop_column(table, "archived_at")
    for table in ("products", "features"):
        op.drop_column(table, "active")
