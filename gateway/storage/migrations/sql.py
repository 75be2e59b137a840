"""Reading the SQL files of the migrations (``versions/NNNN_functions.sql``)."""

from __future__ import annotations

from pathlib import Path

VERSIONS = Path(__file__).with_name("versions")


def functions(filename: str) -> dict[str, str]:
    """The CREATE FUNCTION statements of a file, by function name."""
    text = (VERSIONS / filename).read_text()
    found: dict[str, str] = {}
    marker = "CREATE OR REPLACE FUNCTION "
    start = text.find(marker)
    while start != -1:
        end = text.index("$$;", text.index("AS $$", start) + 5) + 2
        name = text[start + len(marker) : text.index("(", start)]
        found[name] = text[start:end]
        start = text.find(marker, end)
    return found
