"""usage-event hot path: remember issued grant periods, compute the balance in place

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

HERE = Path(__file__).parent
RECORD_USAGE_EVENT = (HERE / "0002_functions.sql").read_text()


def _previous_record_usage_event() -> str:
    """record_usage_event() as 0001 created it."""
    text = (HERE / "0001_functions.sql").read_text()
    start = text.index("CREATE OR REPLACE FUNCTION record_usage_event(")
    end = text.index("$$;", text.index("AS $$", start) + 5)
    return text[start:end] + "$$"


def upgrade() -> None:
    op.add_column(
        "meter_balances",
        sa.Column("grants_period_start", sa.DateTime(timezone=True), nullable=True),
    )
    op.execute(RECORD_USAGE_EVENT.rstrip().removesuffix(";"))


def downgrade() -> None:
    op.execute(_previous_record_usage_event())
    op.drop_column("meter_balances", "grants_period_start")
