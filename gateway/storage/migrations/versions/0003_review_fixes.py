"""review fixes: grants ordered with events, meter-target replays, batch order

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from gateway.storage.migrations.sql import functions as _functions

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "credit_grants",
        sa.Column("issued_seq", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
    )
    for statement in _functions("0003_functions.sql").values():
        op.execute(statement)


def downgrade() -> None:
    previous = {**_functions("0001_functions.sql"), **_functions("0002_functions.sql")}
    for name in ("_usage_replay", "record_usage_event", "record_usage_events"):
        op.execute(previous[name])
    op.drop_column("credit_grants", "issued_seq")
