"""Idle keep-alive connections outlive the clients' own idle expiry (gateway.api.server)."""

from __future__ import annotations

import http.client
import os
import time
from pathlib import Path

from gateway.api.server import KEEP_ALIVE_SECONDS
from tests.servers import cli_server
from tests.test_logs import SECRET

HTTPX_IDLE_EXPIRY = 5.0  # httpx's default keepalive_expiry, also uvicorn's default idle timeout


def test_an_idle_connection_is_kept_past_the_clients_expiry(
    database_url: str, tmp_path: Path
) -> None:
    assert KEEP_ALIVE_SECONDS > HTTPX_IDLE_EXPIRY
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")},
        "DATABASE_URL": database_url,
        "GATEWAY_TOKEN_SECRET": SECRET,
        "GATEWAY_DATA_DIR": str(tmp_path / "data"),
    }
    with (
        (tmp_path / "serve.log").open("w") as output,
        cli_server(env, output) as base,
    ):
        host, port = base.removeprefix("http://").split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=10)
        try:
            connection.request("GET", "/healthz")
            first = connection.getresponse()
            assert (first.status, first.read()) == (200, b'{"status":"ok"}')
            sock = connection.sock
            # Idle for longer than a client's expiry: a server closing at that same moment
            # is what made a request on a reused connection fail without an answer.
            time.sleep(HTTPX_IDLE_EXPIRY + 1)
            connection.request("GET", "/healthz")
            second = connection.getresponse()
            assert (second.status, second.read()) == (200, b'{"status":"ok"}')
            assert connection.sock is sock  # the same connection, not a new one
        finally:
            connection.close()
