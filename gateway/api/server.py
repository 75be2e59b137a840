"""The HTTP server: uvicorn with the gateway's logging, its own access log and a graceful
shutdown, and one "ready" line once the server answers."""

from __future__ import annotations

import http.client
import logging
import os
import signal
import threading
import time
from collections.abc import Callable

from starlette.types import ASGIApp

from gateway.logs import LogFormat, configure

logger = logging.getLogger("gateway.server")

READY_WAIT_SECONDS = 120.0
# How long an idle keep-alive connection is kept open. uvicorn's default (5 s) equals the idle
# expiry of common clients (httpx: 5 s), so a client could send its next request on a
# connection just as the server closes it: the request fails with a dropped connection, no
# response. An idle timeout longer than the clients' (httpx 5 s, load balancers usually 60 s)
# leaves the closing to them.
KEEP_ALIVE_SECONDS = 75


def _announce_when_ready(host: str, port: int, announce: Callable[[], None]) -> None:
    """Call ``announce`` once ``/healthz`` answers (so nothing says ready before it is), from
    a daemon thread; gives up silently after READY_WAIT_SECONDS (the server's own errors say
    why it did not start)."""
    probe_host = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
    deadline = time.monotonic() + READY_WAIT_SECONDS
    while time.monotonic() < deadline:
        connection = http.client.HTTPConnection(probe_host, port, timeout=1)
        try:
            connection.request("GET", "/healthz")
            if connection.getresponse().status == 200:
                announce()
                return
        except OSError:
            pass
        finally:
            connection.close()
        time.sleep(0.05)


def run_server(
    app: ASGIApp | str,
    host: str,
    port: int,
    *,
    workers: int = 1,
    graceful_seconds: int = 30,
    log_format: LogFormat = "json",
    ready_message: str | None = None,
    on_ready: Callable[[], None] | None = None,
) -> None:
    """Serve with uvicorn, the gateway's log format, our access log instead of uvicorn's, and
    a graceful shutdown: on SIGTERM or SIGINT no new connections are accepted, requests in
    flight get up to ``graceful_seconds`` to finish, then the app's lifespan closes the pool.

    ``app`` is the app, or with ``workers`` > 1 the import path of an app factory. Worker
    processes share one metrics directory (``PROMETHEUS_MULTIPROC_DIR``, a temporary one unless
    set) so that /metrics on any worker reports the sum over all of them.

    Once the server answers, ``ready_message`` is logged (``gateway.server``) and ``on_ready``
    is called.
    """
    import tempfile

    import uvicorn

    log_config = configure("INFO", log_format)
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="gateway-metrics-")
    if ready_message is not None or on_ready is not None:

        def announce() -> None:
            if ready_message is not None:
                logger.info(ready_message)
            if on_ready is not None:
                on_ready()

        threading.Thread(
            target=_announce_when_ready, args=(host, port, announce), daemon=True
        ).start()
    # After its graceful shutdown uvicorn re-raises the signal it caught. Under the default
    # SIGTERM disposition that kills the process on the spot, skipping the caller's cleanup
    # (stopping the embedded PostgreSQL): turn it into a normal exit instead.
    previous = signal.signal(signal.SIGTERM, _exit_after_sigterm)
    try:
        uvicorn.run(
            app,
            host=host,
            port=port,
            workers=workers if workers > 1 else None,
            factory=isinstance(app, str),
            log_config=log_config,
            access_log=False,
            # uvicorn believes X-Forwarded-For from 127.0.0.1 by default: anyone on the host
            # (or a local proxy relaying it) could pick their address and rotate past the rate
            # limit. The app believes only GATEWAY_TRUSTED_PROXIES (gateway.api.app).
            proxy_headers=False,
            timeout_graceful_shutdown=graceful_seconds,
            timeout_keep_alive=KEEP_ALIVE_SECONDS,
            lifespan="on",
        )
    finally:
        signal.signal(signal.SIGTERM, previous)


def _exit_after_sigterm(_signum: int, _frame: object) -> None:
    logging.getLogger("gateway").info("stopped by SIGTERM")
    raise SystemExit(0)
