"""batches: each (subscription, meter) group recorded with a few statements

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24

See 0005_functions.sql: ``record_usage_events()`` hands a group of two or more items to
``_record_usage_group()``, which writes the group with set-based statements when every item is
the steady case, and otherwise leaves it to ``record_usage_event()`` item by item, as before.
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
    op.execute("DROP FUNCTION _record_usage_group(jsonb, uuid, uuid, uuid)")
