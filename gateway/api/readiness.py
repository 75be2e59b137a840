"""``/readyz``: the database answers and its Alembic revision is the code's head; 503 otherwise,
with the reason in the JSON body (installed by ``gateway.api.observability``)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import asyncpg
from starlette.requests import Request
from starlette.responses import JSONResponse

from gateway.storage.unavailable import DatabaseUnavailable

READINESS_TIMEOUT_SECONDS = 2.0


@lru_cache(maxsize=1)
def expected_revision() -> str:
    """The newest migration of this code (read once: the code does not change at run time)."""
    from gateway.storage.migrate import current_head

    return current_head()


async def readiness(db: Any) -> tuple[int, dict[str, Any]]:
    """(status code, body): 200 when the database answers and is at the code's revision."""
    expected = expected_revision()
    try:
        # On a connection of its own when the pool is busy: a busy pool is not an outage.
        revision = await db.probe(
            "SELECT version_num FROM alembic_version", READINESS_TIMEOUT_SECONDS
        )
    except asyncpg.UndefinedTableError:
        return 503, {
            "status": "unavailable",
            "database": "ok",
            "migration": None,
            "expected_migration": expected,
            "reason": "migrations were never applied",
        }
    except (
        DatabaseUnavailable,
        OSError,
        TimeoutError,
        asyncpg.PostgresError,
        asyncpg.InterfaceError,
        RuntimeError,
    ) as exc:
        cause = exc.__cause__ if isinstance(exc, DatabaseUnavailable) and exc.__cause__ else exc
        return 503, {
            "status": "unavailable",
            "database": "unreachable",
            "reason": f"{type(cause).__name__}: {cause}"[:300],
        }
    if revision != expected:
        return 503, {
            "status": "unavailable",
            "database": "ok",
            "migration": revision,
            "expected_migration": expected,
            "reason": "the database is not at this version's migration",
        }
    return 200, {"status": "ready", "database": "ok", "migration": revision}


async def readyz(request: Request) -> JSONResponse:
    services = getattr(request.app.state, "services", None)
    if services is None:
        return JSONResponse({"status": "starting"}, status_code=503)
    status, body = await readiness(services.db)
    return JSONResponse(body, status_code=status, headers={"Cache-Control": "no-store"})
