"""hardening: revocable customer sessions; customer tokens date usage in the current period

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01

* ``customers.sessions_revoked_before``: ``revokeCustomerSessions`` sets it to now; a session
  token of the customer issued before it is refused (``gateway.callers.auth``).
* ``record_usage_event()``: a customer session (``p_caller_customer_id`` set) may date usage
  only inside the subscription's current billing period, decided in the same statement that
  records it. The function is 0004's (0003's with 0004's edit) with only the usageDate window
  extended; each replacement is checked to apply exactly once, so a changed 0003 fails loudly
  instead of installing something else. ``_record_usage_steady()`` needs no change: it only
  takes items without a usageDate (dated now, inside the current period).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from gateway.storage.migrations.sql import functions as _functions

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BEFORE = """  ELSIF v_date < v_now - p_backdating THEN
    RETURN _usage_error('INVALID_INPUT', 'usageDate is older than the backdating window',
                        ARRAY['input', 'usageDate']);
  END IF;"""
AFTER = """  ELSIF v_date < v_now - p_backdating THEN
    RETURN _usage_error('INVALID_INPUT', 'usageDate is older than the backdating window',
                        ARRAY['input', 'usageDate']);
  ELSIF p_caller_customer_id IS NOT NULL
        AND v_date < (SELECT cp.period_start
                        FROM billing_period(s.start_date, s.interval_unit, s.interval_count,
                                            v_now) cp) THEN
    RETURN _usage_error('INVALID_INPUT',
                        'a customer session may only date usage inside the current billing period',
                        ARRAY['input', 'usageDate']);
  END IF;"""


def _previous() -> str:
    """record_usage_event() as 0004 installed it."""
    module = importlib.import_module("gateway.storage.migrations.versions.0004_grant_updates")
    text: str = module.record_usage_event()
    return text


def record_usage_event() -> str:
    before = _previous()
    if before.count(BEFORE) != 1:
        raise RuntimeError("0004's record_usage_event() is not the one this migration edits")
    return before.replace(BEFORE, AFTER)


def upgrade() -> None:
    op.add_column(
        "customers", sa.Column("sessions_revoked_before", sa.DateTime(timezone=True), nullable=True)
    )
    op.execute(record_usage_event())


def downgrade() -> None:
    op.execute(_previous())
    op.drop_column("customers", "sessions_revoked_before")
