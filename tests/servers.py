"""Gateway processes for tests that need real HTTP or several processes on one database."""

from __future__ import annotations

import functools
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from gateway.api.server import KEEP_ALIVE_SECONDS


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


PROCESSES: dict[str, subprocess.Popen[bytes]] = {}  # by base URL, while they run


@contextmanager
def gateway_processes(
    database_url: str, count: int, *, logs: Path | None = None, workers: int = 1, **env: str
) -> Iterator[list[str]]:
    """`count` uvicorn instances serving the app on 127.0.0.1, each with ``workers`` worker
    processes (uvicorn's own, as `billing-gateway serve --workers`); yields their base URLs.

    With ``logs`` (a directory), process i writes its stderr to ``logs/gateway-i.log``."""
    procs: list[subprocess.Popen[bytes]] = []
    files = ExitStack()
    urls: list[str] = []
    environment = {
        **os.environ,
        "DATABASE_URL": database_url,
        "GATEWAY_TOKEN_SECRET": "test-secret-" + "x" * 32,
        **env,
    }
    try:
        for index in range(count):
            port = free_port()
            stderr = None
            if logs is not None:
                stderr = files.enter_context((logs / f"gateway-{index}.log").open("wb"))
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "uvicorn",
                        "--factory",
                        "gateway.api.app:app_from_env",
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(port),
                        "--log-level",
                        "warning",
                        # as `billing-gateway serve`: the app alone decides whom to believe
                        "--no-proxy-headers",
                        # and idle connections kept as long (gateway.api.server)
                        "--timeout-keep-alive",
                        str(KEEP_ALIVE_SECONDS),
                        *(["--workers", str(workers)] if workers > 1 else []),
                    ],
                    env=environment,
                    stderr=stderr,
                )
            )
            urls.append(f"http://127.0.0.1:{port}")
            PROCESSES[urls[-1]] = procs[-1]
        deadline = time.monotonic() + 30
        for url in urls:
            while True:
                try:
                    if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"gateway at {url} did not start")
                time.sleep(0.1)
        yield urls
    finally:
        for url in urls:
            PROCESSES.pop(url, None)
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        files.close()


@contextmanager
def static_server(port: int, directory: Path) -> Iterator[str]:
    """The files of ``directory`` over HTTP on localhost:``port`` (another origin than the
    gateway's 127.0.0.1), from a background thread."""
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(directory))
    server = ThreadingHTTPServer(("localhost", port), handler)
    thread = threading.Thread(target=server.serve_forever, name="static", daemon=True)
    thread.start()
    try:
        yield f"http://localhost:{port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@contextmanager
def cli_server(env: dict[str, str], output: Any, *args: str) -> Iterator[str]:
    """`billing-gateway serve` on a free port, stdout and stderr into `output` (a file);
    yields its base URL once /healthz answers, and stops it with SIGTERM (exit status 0)."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--port", str(port), *args],
        env=env,
        stdout=output,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("the gateway did not start")
            time.sleep(0.1)
        yield base
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(timeout=60) == 0
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
