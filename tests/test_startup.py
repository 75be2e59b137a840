"""Start-up failures, driven through the CLI as a user would: exit status 2 and one clear line
on stderr (what is wrong, which variable or file, what to do), nothing said to be ready."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from gateway.storage.db import Database
from tests.servers import free_port

ROOT = Path(__file__).parent.parent
SECRET = "kQ3v-9Zr_T1mXw8bLp2YcN6dHs4uJf0aEg7iRo5tVy"


def _run(args: list[str], cwd: Path = ROOT, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "OTEL_", "DATABASE"))
    }
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        cwd=cwd,
        env={**clean, "GATEWAY_TOKEN_SECRET": SECRET, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_setting_that_does_not_parse(tmp_path: Path) -> None:
    proc = _run(["serve"], GATEWAY_PORT="abc", GATEWAY_DATA_DIR=str(tmp_path))
    assert (proc.returncode, proc.stdout, proc.stderr) == (
        2,
        "",
        "configuration error: GATEWAY_PORT: Input should be a valid integer, unable to parse"
        " string as an integer; fix or unset GATEWAY_PORT\n",
    )
    assert list(tmp_path.iterdir()) == []  # no embedded server was started


def test_production_without_a_secret(database_url: str) -> None:
    proc = _run(
        ["migrate"],
        GATEWAY_ENV="production",
        DATABASE_URL=database_url,
        GATEWAY_TOKEN_SECRET="",
    )
    assert (proc.returncode, proc.stdout, proc.stderr) == (
        2,
        "",
        "configuration error: GATEWAY_TOKEN_SECRET must be set (at least 32 characters) in"
        " production mode\n",
    )


def test_an_unreachable_database_names_it_without_the_password(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    url = f"postgresql://gateway:hunter2-secret@127.0.0.1:{port}/billing"
    for command in (["migrate"], ["serve", "--port", str(free_port())], ["keys", "list"]):
        proc = _run(command, DATABASE_URL=url)
        assert (proc.returncode, proc.stdout, proc.stderr) == (
            2,
            "",
            f"error: cannot connect to the database of DATABASE_URL (127.0.0.1:{port}/billing):"
            " connection refused; check that PostgreSQL runs there and that DATABASE_URL is"
            " right\n",
        ), command


def test_a_database_that_does_not_exist(database_url: str) -> None:
    parts = urlsplit(database_url)
    url = urlunsplit((parts.scheme, parts.netloc, "/no_such_database", parts.query, ""))
    proc = _run(["migrate"], DATABASE_URL=url)
    first = proc.stderr.splitlines()[0]
    assert (proc.returncode, proc.stdout, len(proc.stderr.splitlines())) == (2, "", 1)
    assert first.startswith("error: cannot connect to the database of DATABASE_URL (")
    assert first.endswith(
        "/no_such_database): the database does not exist; check that PostgreSQL runs there"
        " and that DATABASE_URL is right"
    )


async def test_a_missing_pricing_file(db: Database, database_url: str, tmp_path: Path) -> None:
    before = await db.fetchval("SELECT count(*) FROM pricing_models")
    model = "00000000-0000-0000-0000-000000000000"
    for args in (
        ["pricing", "import", "nope.yaml"],
        ["pricing", "apply", "nope.yaml", "--model", model],
    ):
        proc = _run(args, cwd=tmp_path, DATABASE_URL=database_url)
        assert (proc.returncode, proc.stdout, proc.stderr) == (
            2,
            "",
            "error: nope.yaml: no such file; give the path of a pricing setup file (YAML or"
            " JSON, Flowglad's setup format)\n",
        ), args
    assert await db.fetchval("SELECT count(*) FROM pricing_models") == before == 0


def test_a_port_already_taken(database_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = _run(["serve", "--port", str(port)], DATABASE_URL=database_url)
    assert (proc.returncode, proc.stdout, proc.stderr) == (
        2,
        "",
        f"error: cannot listen on 127.0.0.1:{port}: the port is already in use; stop the"
        " process using it or choose another port (--port or GATEWAY_PORT)\n",
    )
