"""What the bench starts, and stops again: PostgreSQL, its database, HTTP server processes.

- ``database()``: a fresh database on the server at DATABASE_URL when it is set, else on an
  embedded PostgreSQL in a temporary directory (gateway.storage.embedded.EmbeddedPostgres); migrated
  with gateway.storage.migrate.upgrade; dropped (and the embedded server stopped, its directory
  removed) at the end.
- ``server()``: a process group serving HTTP on 127.0.0.1 (the gateway through its own
  command, ``billing-gateway serve --workers N``; the baseline through uvicorn with the same
  options); terminated at the end, killed if it does not stop in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import psutil  # type: ignore[import-untyped, unused-ignore]

from gateway.storage.db import asyncpg_dsn

REPO = Path(__file__).resolve().parent.parent
TOKEN_SECRET = "bench-secret-" + "x" * 32


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(asyncpg_dsn(url))
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


async def _admin(url: str, sql: str) -> str:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        return (
            str(await conn.fetchval(sql))
            if sql.startswith("SELECT")
            else str(await conn.execute(sql))
        )
    finally:
        await conn.close()


@dataclass
class Database:
    url: str
    server_version: str
    embedded: bool
    workdir: Path
    postmaster_pid: int | None = None

    def postgres_pids(self) -> list[int]:
        """The embedded server's processes (postmaster, backends, background workers)."""
        if self.postmaster_pid is None:
            return []
        try:
            parent = psutil.Process(self.postmaster_pid)
            return [parent.pid] + [c.pid for c in parent.children(recursive=True)]
        except psutil.Error:
            return []


@contextmanager
def database(log: Callable[[str], None] = print) -> Iterator[Database]:
    from gateway.storage.embedded import EmbeddedPostgres
    from gateway.storage.migrate import upgrade

    tmp = tempfile.TemporaryDirectory(prefix="gateway-bench-")
    workdir = Path(tmp.name)
    server: EmbeddedPostgres | None = None
    name = f"gateway_bench_{os.getpid()}_{secrets.token_hex(3)}"
    created = False
    try:
        base = os.environ.get("DATABASE_URL")
        if base:
            admin_url = base
            log(f"PostgreSQL: DATABASE_URL (database {name})")
        else:
            server = EmbeddedPostgres(workdir / "embedded")
            admin_url = server.start()
            log(f"PostgreSQL: embedded, in {workdir}")
        asyncio.run(_admin(admin_url, f'CREATE DATABASE "{name}"'))
        created = True
        url = _with_database(admin_url, name)
        upgrade(url)
        version = asyncio.run(_admin(url, "SELECT current_setting('server_version')"))
        postmaster = None
        if server is not None:
            with contextlib.suppress(OSError, ValueError, IndexError):
                postmaster = int((server.pgdata / "postmaster.pid").read_text().split()[0])
        yield Database(
            url=url,
            server_version=version,
            embedded=server is not None,
            workdir=workdir,
            postmaster_pid=postmaster,
        )
    finally:
        if created:
            with contextlib.suppress(Exception):
                asyncio.run(_admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        if server is not None:
            server.stop()
        tmp.cleanup()


@contextmanager
def sibling_database(db: Database, tag: str) -> Iterator[str]:
    """Another fresh, empty database on the same server as `db` (not migrated); dropped at
    the end. Its URL."""
    name = f"gateway_bench_{os.getpid()}_{tag}_{secrets.token_hex(3)}"
    asyncio.run(_admin(db.url, f'CREATE DATABASE "{name}"'))
    try:
        yield _with_database(db.url, name)
    finally:
        with contextlib.suppress(Exception):
            asyncio.run(_admin(db.url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@dataclass
class Server:
    name: str
    url: str
    port: int
    process: subprocess.Popen[bytes]
    workers: int
    log_path: Path
    worker_pids: list[int] = field(default_factory=list)

    def find_workers(self) -> list[int]:
        """The processes that serve requests: the workers (or the process itself)."""
        try:
            parent = psutil.Process(self.process.pid)
            children = [
                c
                for c in parent.children(recursive=False)
                if "resource_tracker" not in " ".join(c.cmdline())
            ]
        except psutil.Error:
            return []
        return [c.pid for c in children] if self.workers > 1 else [self.process.pid]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=1) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


@contextmanager
def server(
    name: str,
    command: list[str],
    env: dict[str, str],
    workers: int,
    workdir: Path,
    source: Path = REPO,
) -> Iterator[Server]:
    """`source`: the tree whose code is served (another checkout to compare two versions)."""
    port = free_port()
    log_path = workdir / f"{name}.log"
    environment = {**os.environ, "PYTHONPATH": f"{source}{os.pathsep}{REPO}", **env}
    argv = [sys.executable, *command, "--host", "127.0.0.1", "--port", str(port)]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            argv,
            env=environment,
            cwd=source,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    handle = Server(
        name=name,
        url=f"http://127.0.0.1:{port}",
        port=port,
        process=process,
        workers=workers,
        log_path=log_path,
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited: {log_path.read_text()[-3000:]}")
            pids = handle.find_workers()
            if len(pids) >= workers and _healthy(handle.url):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start: {log_path.read_text()[-3000:]}")
            time.sleep(0.2)
        # Each worker answers once it has finished its start-up (its pool is open).
        time.sleep(1.0)
        handle.worker_pids = handle.find_workers()
        yield handle
    finally:
        _stop(process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    # Workers left behind by a supervisor that died first: the group is ours.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


def gateway_command(workers: int) -> list[str]:
    """How the gateway is deployed: its own `serve` command (uvicorn, N worker processes)."""
    return ["-m", "gateway.cli", "serve", "--workers", str(workers)]


def baseline_command(workers: int) -> list[str]:
    """The baseline: bare uvicorn (the gateway's loop and HTTP parser, no access log)."""
    command = [
        "-m",
        "uvicorn",
        "--factory",
        "bench.baseline_app:create_app",
        "--log-level",
        "warning",
        "--no-access-log",
        "--timeout-graceful-shutdown",
        "30",
    ]
    if workers > 1:
        command += ["--workers", str(workers)]
    return command


def server_env(database_url: str, workdir: Path) -> dict[str, str]:
    return {
        "DATABASE_URL": database_url,
        "GATEWAY_TOKEN_SECRET": TOKEN_SECRET,
        "GATEWAY_DATA_DIR": str(workdir / "gateway-data"),
        # One secret key sends thousands of requests a second: no per-caller rate limit.
        "GATEWAY_RATE_LIMIT_PER_MINUTE": "0",
        # No background statements between the scrapes of gateway_db_queries_total: the
        # webhook worker's poll and the reservation sweep would count as the requests' round
        # trips (figure 4). No webhook endpoint exists in the bench, so nothing is delivered.
        "GATEWAY_WEBHOOK_WORKER": "false",
        "GATEWAY_RESERVATION_SWEEP_SECONDS": "0",
    }


def peak_rss(pid: int) -> int | None:
    """The high-water mark of a process's resident set (VmHWM), in bytes."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None
