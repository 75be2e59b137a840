"""The billing core's database functions: one current definition each, in ``storage/sql/``.

Each ``.sql`` file holds the functions of one domain (ids, periods, balances, usage, batches,
alerts) as ``CREATE OR REPLACE FUNCTION public.name(...) ... AS $$ ... $$;`` statements. They are
registered with alembic-utils (``storage/migrations/env.py``), so ``alembic check`` fails
when the migrated database and these files differ, and ``alembic revision --autogenerate``
writes the migration for a changed, added or removed function (docs/architecture.md).
"""

from __future__ import annotations

from pathlib import Path

from alembic_utils.pg_function import PGFunction

SOURCES = Path(__file__).with_name("sql")
MARKER = "CREATE OR REPLACE FUNCTION "


def read_functions(path: Path) -> dict[str, str]:
    """The CREATE FUNCTION statements of a file, by function name (schema prefix dropped).

    Hand-written because the files follow one convention (a body quoted with ``$$`` that
    ends with ``$$;``), and alembic-utils parses one statement, not a file of them.
    """
    text = path.read_text()
    found: dict[str, str] = {}
    start = text.find(MARKER)
    while start != -1:
        end = text.index("$$;", text.index("AS $$", start) + 5) + 2
        name = text[start + len(MARKER) : text.index("(", start)].removeprefix("public.")
        if name in found:
            raise ValueError(f"{path.name}: function {name} is defined twice")
        found[name] = text[start:end]
        start = text.find(MARKER, end)
    return found


def sources() -> dict[str, str]:
    """Every function's current definition, by name, across all source files."""
    found: dict[str, str] = {}
    for path in sorted(SOURCES.glob("*.sql")):
        for name, statement in read_functions(path).items():
            if name in found:
                raise ValueError(f"function {name} is defined in more than one source file")
            found[name] = statement
    return found


def entities() -> list[PGFunction]:
    """The functions as alembic-utils entities, for autogenerate and ``alembic check``."""
    return [PGFunction.from_sql(statement) for statement in sources().values()]
