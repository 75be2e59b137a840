"""batches: the steady items of a batch recorded by one statement

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24

See 0005_functions.sql. ``record_usage_events()`` hands the batch's (subscription, meter)
groups to ``_record_usage_steady()``. That function writes, with one set-based statement,
every group whose items are all the steady case. The other groups run through
``record_usage_event()`` item by item, as before.
"""

import importlib.util
from collections.abc import Callable, Sequence
from pathlib import Path

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _load_functions() -> Callable[[str], dict[str, str]]:
    """0003's reader of migration SQL files (by path: migration files are not a package)."""
    spec = importlib.util.spec_from_file_location(
        "_migration_0003", Path(__file__).with_name("0003_review_fixes.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    reader: Callable[[str], dict[str, str]] = module._functions
    return reader


_functions = _load_functions()


def upgrade() -> None:
    for statement in _functions("0005_functions.sql").values():
        op.execute(statement)


def downgrade() -> None:
    op.execute(_functions("0003_functions.sql")["record_usage_events"])
    op.execute("DROP FUNCTION _record_usage_steady(jsonb, uuid)")
