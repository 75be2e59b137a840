"""One logging setup for every process and command: JSON lines off a terminal, short lines on
one (GATEWAY_LOG_FORMAT forces either), commands quiet unless -v."""

from __future__ import annotations

import json
import logging
import os
import pty
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog

from gateway.logs import JsonFormatter, request_id
from tests.servers import cli_server

ROOT = Path(__file__).parent.parent
SECRET = "kQ3v-9Zr_T1mXw8bLp2YcN6dHs4uJf0aEg7iRo5tVy"


def _env(database_url: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "OTEL_"))}
    return {
        **clean,
        "DATABASE_URL": database_url,
        "GATEWAY_TOKEN_SECRET": SECRET,
        "GATEWAY_DATA_DIR": str(tmp_path / "data"),
        **extra,
    }


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_serve_writes_only_json_lines_off_a_terminal(database_url: str, tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    with log.open("w") as output, cli_server(_env(database_url, tmp_path), output) as base:
        response = httpx.get(base + "/readyz", headers={"X-Request-ID": "logs-1"}, timeout=10)
        assert response.status_code == 200
        port = base.rsplit(":", 1)[1]
    lines = log.read_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line, start-up to shutdown
    assert all({"time", "level", "logger", "message", "pid"} <= set(r) for r in records)
    messages = [(r["logger"], r["message"]) for r in records]
    # Migrations (alembic's logger) and uvicorn go through the same setup.
    assert ("alembic.runtime.migration", "Context impl PostgresqlImpl.") in messages
    assert ("uvicorn.error", "Application startup complete.") in messages
    # The URL is said once the server answers, not before.
    ready = messages.index(("gateway.server", f"GraphiQL: http://127.0.0.1:{port}/graphql"))
    assert ready > messages.index(("uvicorn.error", "Application startup complete."))
    (access,) = [r for r in records if r.get("request_id") == "logs-1"]
    assert (access["logger"], access["message"], access["status"]) == (
        "gateway.access",
        "GET /readyz 200",
        200,
    )
    assert messages[-1] == ("gateway", "stopped by SIGTERM")
    # uvicorn's coloured duplicate of its messages is left out.
    assert [r for r in records if "color_message" in r] == []


def test_console_format_is_short_lines(database_url: str, tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    env = _env(database_url, tmp_path, GATEWAY_LOG_FORMAT="console")
    with log.open("w") as output, cli_server(env, output) as base:
        httpx.get(base + "/healthz", headers={"X-Request-ID": "console-1"}, timeout=10)
    lines = log.read_text().splitlines()
    assert [line for line in lines if line.startswith("{")] == []
    (access,) = [line for line in lines if "console-1" in line]
    assert re.fullmatch(
        r"\d\d:\d\d:\d\d \[info\s*\] GET /healthz 200 \[gateway\.access\]"
        r" duration_ms=[0-9.]+ request_id=console-1",
        access,
    ), access


def test_commands_are_quiet_unless_verbose(database_url: str, tmp_path: Path) -> None:
    env = _env(database_url, tmp_path)
    quiet = _cli(["migrate"], env)
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "")
    verbose = _cli(["-v", "migrate"], env)
    assert (verbose.returncode, verbose.stdout) == (0, "")
    records = [json.loads(line) for line in verbose.stderr.splitlines()]
    assert [(r["logger"], r["message"]) for r in records] == [
        ("alembic.runtime.migration", "Context impl PostgresqlImpl."),
        ("alembic.runtime.migration", "Will assume transactional DDL."),
        ("gateway.cli", "database is at the latest migration"),
    ]
    listed = _cli(["keys", "list"], env)
    assert (listed.returncode, listed.stderr) == (0, "")


def test_a_terminal_gets_console_lines(database_url: str, tmp_path: Path) -> None:
    """GATEWAY_LOG_FORMAT unset (auto): stderr on a terminal gets the console format."""
    leader, follower = pty.openpty()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "gateway.cli", "-v", "migrate"],
            cwd=ROOT,
            env={**_env(database_url, tmp_path), "TERM": "dumb", "NO_COLOR": "1"},
            stdout=subprocess.PIPE,
            stderr=follower,
            timeout=120,
            check=False,
        )
        os.close(follower)
        follower = -1
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal is closed once everything is read
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        if follower != -1:
            os.close(follower)
        os.close(leader)
    assert proc.returncode == 0
    text = re.sub(r"\x1b\[[0-9;]*m", "", b"".join(chunks).decode()).replace("\r\n", "\n")
    lines = text.splitlines()
    assert [line for line in lines if line.startswith("{")] == []
    assert re.fullmatch(
        r"\d\d:\d\d:\d\d \[info\s*\] database is at the latest migration \[gateway\.cli\]",
        lines[-1],
    ), lines


def test_an_unknown_log_format_is_a_configuration_error(tmp_path: Path) -> None:
    proc = _cli(["migrate"], _env("postgresql://127.0.0.1:1/x", tmp_path, GATEWAY_LOG_FORMAT="xml"))
    assert (proc.returncode, proc.stdout, proc.stderr) == (
        2,
        "",
        "configuration error: GATEWAY_LOG_FORMAT: Input should be 'auto', 'json' or 'console';"
        " fix or unset GATEWAY_LOG_FORMAT\n",
    )


def _access_record(**extra: object) -> logging.LogRecord:
    record = logging.LogRecord(
        "gateway.access", logging.INFO, __file__, 1, "%s %s %d", ("POST", "/graphql", 200), None
    )
    record.__dict__.update(extra)
    return record


def test_the_access_record_is_rendered_as_the_processor_chain_renders_it() -> None:
    """JsonFormatter's short path for the access record: the same line, byte for byte."""
    formatter = JsonFormatter()
    fields = {"method": "POST", "path": "/graphql", "status": 200, "duration_ms": 1.234}
    token = request_id.set("req-1")
    try:
        for record in (_access_record(**fields), _access_record(**{**fields, "status": 503})):
            chain = structlog.stdlib.ProcessorFormatter.format(formatter, record)
            assert formatter.format(record) == chain
            assert list(json.loads(chain)) == [
                "level", "logger", "method", "path", "status", "duration_ms", "request_id",
                "time", "pid", "message",
            ]  # fmt: skip
    finally:
        request_id.reset(token)
    # Outside a request (no id), and a record of another form: the chain's line as well.
    for record in (
        _access_record(**fields),
        _access_record(method="GET", path="/x"),  # not the access record's fields
        _access_record(**fields, other="kept"),
    ):
        assert formatter.format(record) == structlog.stdlib.ProcessorFormatter.format(
            formatter, record
        )


def test_the_access_record_skips_the_chain_with_tracing_loaded_but_no_span(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import gateway.api.app  # noqa: F401  (loads OpenTelemetry's API, as the server does)

    assert "opentelemetry.trace" in sys.modules
    calls: list[str] = []
    chain = structlog.stdlib.ProcessorFormatter.format

    def counted(self: Any, record: logging.LogRecord) -> str:
        calls.append(record.name)
        return chain(self, record)

    monkeypatch.setattr(structlog.stdlib.ProcessorFormatter, "format", counted)
    formatter = JsonFormatter()
    fields = {"method": "POST", "path": "/graphql", "status": 200, "duration_ms": 1.0}
    line = formatter.format(_access_record(**fields))
    assert calls == []
    assert json.loads(line)["message"] == "POST /graphql 200"
    formatter.format(_access_record(**fields, other="kept"))
    assert calls == ["gateway.access"]
