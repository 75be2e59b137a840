"""A PgBouncer in transaction mode in front of the test database, started by the test.

Needs the ``pgbouncer`` binary (Debian's package of that name); tests skip without it. It
listens on a free loopback port, logs in to PostgreSQL as the test URL's user (``auth_type =
any``: no passwords to manage), and its pool is small, so that consecutive transactions of one
client land on different server connections, which is what breaks session state.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from gateway.storage.db import asyncpg_dsn
from tests.servers import free_port


def _libpq_value(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


@contextmanager
def pgbouncer(database_url: str, *, connect_query: str | None = None) -> Iterator[str]:
    """PgBouncer (transaction mode) in front of ``database_url``; yields its URL."""
    binary = shutil.which("pgbouncer")
    if binary is None:
        pytest.skip("pgbouncer is not installed (Debian/Ubuntu: apt-get install -y pgbouncer)")
    parts = urlsplit(asyncpg_dsn(database_url))
    query = parse_qs(parts.query)
    host = parts.hostname or query.get("host", ["/tmp"])[0]
    port = parts.port or 5432
    user = unquote(parts.username or "postgres")
    dbname = parts.path.lstrip("/")
    target = [f"host={_libpq_value(host)}", f"port={port}", f"dbname={dbname}", f"user={user}"]
    if parts.password:
        target.append(f"password={_libpq_value(unquote(parts.password))}")
    if connect_query:
        target.append(f"connect_query={_libpq_value(connect_query)}")
    listen_port = free_port()
    with tempfile.TemporaryDirectory(prefix="gateway-pgbouncer-") as tmp:
        work = Path(tmp)
        work.chmod(0o777)
        config = work / "pgbouncer.ini"
        config.write_text(
            "\n".join(
                [
                    "[databases]",
                    f"gateway = {' '.join(target)}",
                    "[pgbouncer]",
                    "listen_addr = 127.0.0.1",
                    f"listen_port = {listen_port}",
                    "unix_socket_dir =",
                    "auth_type = any",
                    "pool_mode = transaction",
                    "default_pool_size = 4",
                    "max_client_conn = 1000",
                    f"logfile = {work / 'pgbouncer.log'}",
                    f"pidfile = {work / 'pgbouncer.pid'}",
                    "",
                ]
            )
        )
        config.chmod(0o644)
        command = [binary, str(config)]
        if os.geteuid() == 0:
            # PgBouncer refuses to run as root: run it as the owner of the server's socket
            # directory (who can reach the socket), or nobody.
            owner = Path(host).stat().st_uid if host.startswith("/") else 0
            name = pwd.getpwuid(owner).pw_name if owner != 0 else "nobody"
            command = [binary, "-u", name, str(config)]
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    socket.create_connection(("127.0.0.1", listen_port), timeout=0.5).close()
                    break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        log = work / "pgbouncer.log"
                        raise RuntimeError(
                            f"pgbouncer did not start: {proc.stderr.read() if proc.stderr else ''}"
                            f"{log.read_text() if log.exists() else ''}"
                        ) from None
                    time.sleep(0.05)
            yield f"postgresql://{user}@127.0.0.1:{listen_port}/gateway"
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
