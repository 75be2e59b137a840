"""The billing core's database functions: one current definition each, in ``storage/sql/``.

Each ``.sql`` file holds the functions of one domain (ids, periods, balances, usage, batches,
alerts, credentials) as ``CREATE OR REPLACE FUNCTION public.name(...) ... AS $$ ... $$;``
statements, and the triggers that call them as ``CREATE TRIGGER name ... ;`` statements. They
are registered with alembic-utils (``storage/migrations/env.py``), so ``alembic check`` fails
when the migrated database and these files differ, and ``alembic revision --autogenerate``
writes the migration for a changed, added or removed function or trigger
(docs/architecture.md).
"""

from __future__ import annotations

from pathlib import Path

from alembic_utils.pg_function import PGFunction
from alembic_utils.pg_trigger import PGTrigger
from alembic_utils.replaceable_entity import ReplaceableEntity

SOURCES = Path(__file__).with_name("sql")
MARKER = "CREATE OR REPLACE FUNCTION "
TRIGGER_MARKER = "CREATE TRIGGER "


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


def read_triggers(path: Path) -> dict[str, str]:
    """The CREATE TRIGGER statements of a file (each ends at its first ``;``), by name."""
    text = path.read_text()
    found: dict[str, str] = {}
    start = text.find(TRIGGER_MARKER)
    while start != -1:
        end = text.index(";", start)
        name = text[start + len(TRIGGER_MARKER) :].split(maxsplit=1)[0]
        if name in found:
            raise ValueError(f"{path.name}: trigger {name} is defined twice")
        found[name] = " ".join(text[start:end].split())  # one line: alembic-utils parses it
        start = text.find(TRIGGER_MARKER, end)
    return found


def trigger_sources() -> dict[str, str]:
    """Every trigger's current definition, by name, across all source files."""
    found: dict[str, str] = {}
    for path in sorted(SOURCES.glob("*.sql")):
        for name, statement in read_triggers(path).items():
            if name in found:
                raise ValueError(f"trigger {name} is defined in more than one source file")
            found[name] = statement
    return found


def entities() -> list[ReplaceableEntity]:
    """The functions and triggers as alembic-utils entities, for autogenerate and
    ``alembic check``."""
    functions: list[ReplaceableEntity] = [
        PGFunction.from_sql(statement) for statement in sources().values()
    ]
    triggers = [PGTrigger.from_sql(statement) for statement in trigger_sources().values()]
    return functions + triggers
