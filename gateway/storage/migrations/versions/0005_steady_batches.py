"""batches: the steady items of a batch recorded by one statement

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24

See 0005_functions.sql. ``record_usage_events()`` hands the batch's (subscription, meter)
groups to ``_record_usage_steady()``. That function writes, with one set-based statement,
every group whose items are all the steady case. The other groups run through
``record_usage_event()`` item by item, as before.
"""

from collections.abc import Sequence

from alembic import op

from gateway.storage.migrations.sql import functions as _functions

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    for statement in _functions("0005_functions.sql").values():
        op.execute(statement)


def downgrade() -> None:
    op.execute(_functions("0003_functions.sql")["record_usage_events"])
    op.execute("DROP FUNCTION _record_usage_steady(jsonb, uuid)")
