"""The embedded PostgreSQL: set-up with nothing but Python, data kept across restarts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest
from pydantic import ValidationError

from gateway.settings import Settings
from tests.servers import free_port


def _cli(data_dir: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["GATEWAY_DATA_DIR"] = str(data_dir)
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _postgres_running(data_dir: Path) -> bool:
    pgdata = str(data_dir / "pgdata")
    for proc in psutil.process_iter(attrs=["name", "cmdline"]):
        if proc.info["name"] == "postgres" and pgdata in " ".join(proc.info["cmdline"] or []):
            return True
    return False


def test_commands_one_after_the_other_share_the_data(embedded_data_dir: Path) -> None:
    data_dir = embedded_data_dir
    created = _cli(data_dir, "keys", "create", "--name", "first")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("sk_")
    # A second command on the same data directory starts the server again: the key is there.
    listed = _cli(data_dir, "keys", "list")
    assert listed.returncode == 0, listed.stderr
    assert [line.split()[2] for line in listed.stdout.strip().splitlines()] == ["first"]
    assert key not in listed.stdout  # only a prefix is ever shown again
    assert not _postgres_running(data_dir)


def test_serve_answers_graphql_and_stops_the_server_on_exit(embedded_data_dir: Path) -> None:
    data_dir = embedded_data_dir
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["GATEWAY_DATA_DIR"] = str(data_dir)
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    response = None
    try:
        deadline = time.monotonic() + 60
        while response is None:
            try:
                response = httpx.post(
                    f"http://127.0.0.1:{port}/graphql",
                    json={"query": "{ __schema { mutationType { name } } }"},
                    timeout=2,
                )
            except httpx.HTTPError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    break
                time.sleep(0.2)
        if response is not None:
            assert response.json() == {"data": {"__schema": {"mutationType": {"name": "Mutation"}}}}
            assert _postgres_running(data_dir)
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    if response is None:  # with the process's output, which says why
        pytest.fail(f"the gateway did not start (exit code {proc.returncode}):\n{output}")
    assert proc.returncode == 0, output
    messages = [json.loads(line)["message"] for line in output.splitlines()]
    assert f"GraphiQL: http://127.0.0.1:{port}/graphql" in messages
    assert not _postgres_running(data_dir)


SECRET = "kQ3v-9Zr_T1mXw8bLp2YcN6dHs4uJf0aEg7iRo5tVy"  # random enough for production


def test_production_mode_refuses_default_secrets() -> None:
    with pytest.raises(ValidationError, match="GATEWAY_TOKEN_SECRET must be set"):
        Settings(gateway_env="production", database_url="postgresql://db/billing")
    with pytest.raises(ValidationError, match="DATABASE_URL must be set in production mode"):
        Settings(gateway_env="production", gateway_token_secret=SECRET)
    settings = Settings(
        gateway_env="production",
        database_url="postgresql://db/billing",
        gateway_token_secret=SECRET,
    )
    assert settings.token_secret() == SECRET


def test_development_mode_generates_and_keeps_a_token_secret(tmp_path: Path) -> None:
    first = Settings(gateway_data_dir=tmp_path).token_secret()
    assert len(first) >= 32
    assert Settings(gateway_data_dir=tmp_path).token_secret() == first
    assert oct((tmp_path / "token-secret").stat().st_mode & 0o777) == "0o600"
