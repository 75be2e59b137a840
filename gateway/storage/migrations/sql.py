"""Reading the SQL files of the landed migrations (``versions/NNNN_functions.sql``).

These files are history: new function changes are made in ``gateway/storage/sql/`` and
migrated with alembic-utils (``gateway.storage.sql_sources``).
"""

from __future__ import annotations

from pathlib import Path

from gateway.storage.sql_sources import read_functions

VERSIONS = Path(__file__).with_name("versions")


def functions(filename: str) -> dict[str, str]:
    """The CREATE FUNCTION statements of a file, by function name."""
    return read_functions(VERSIONS / filename)
