"""usage events: update consumed grants one row at a time

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24

``record_usage_event()`` moved the consumed credits with one ``UPDATE ... FROM unnest(ids,
takes)``. PostgreSQL plans that statement as a join for every event, and it was the second
most expensive statement of the function. An event almost always takes from one grant, so
this migration updates each grant by its primary key in a loop. The result is the same, and
PostgreSQL CPU per batched event fell from about 0.44 ms to about 0.36 ms (bench/RESULTS.md).

The function is 0003's, with only that block replaced. The replacement is checked to apply
exactly once, so a changed 0003 fails loudly instead of installing something else.
"""

from collections.abc import Sequence

from alembic import op

from gateway.storage.migrations.sql import functions as _functions

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BEFORE = """  IF cardinality(v_grant_ids) > 0 THEN
    UPDATE credit_grants cg SET consumed = cg.consumed + x.take
      FROM unnest(v_grant_ids, v_takes) AS x(id, take)
     WHERE cg.id = x.id;
  END IF;"""
AFTER = """  FOR i IN 1 .. coalesce(cardinality(v_grant_ids), 0) LOOP
    UPDATE credit_grants SET consumed = consumed + v_takes[i] WHERE id = v_grant_ids[i];
  END LOOP;"""


def record_usage_event() -> str:
    before = _functions("0003_functions.sql")["record_usage_event"]
    if before.count(BEFORE) != 1:
        raise RuntimeError("0003's record_usage_event() is not the one this migration edits")
    return before.replace(BEFORE, AFTER)


def upgrade() -> None:
    op.execute(record_usage_event())


def downgrade() -> None:
    op.execute(_functions("0003_functions.sql")["record_usage_event"])
