"""Start-up failures as one clear line: what is wrong, which variable or file, what to do.

The CLI prints a :class:`StartupError` as ``error: <message>`` on stderr and exits with
status 2, instead of a stack trace (docs/operations.md, "Start-up errors").
"""

from __future__ import annotations

import errno
import socket
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import asyncpg
from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError

# What reaching a database can raise: the driver's errors, network errors, and SQLAlchemy's
# wrapping of them (alembic connects through SQLAlchemy).
DATABASE_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, DBAPIError)


class StartupError(Exception):
    """A failure before the gateway or a command could start; its message is one line."""


def settings_problems(exc: ValidationError) -> list[str]:
    """One line per invalid setting, naming its variable, without the value (it may be a
    secret): ``GATEWAY_PORT: Input should be a valid integer ...; fix or unset GATEWAY_PORT``."""
    lines = []
    for error in exc.errors(include_url=False, include_input=False):
        message = str(error["msg"]).removeprefix("Value error, ")
        variable = ".".join(str(part) for part in error["loc"]).upper()
        if variable and not message.startswith(variable):
            message = f"{variable}: {message}; fix or unset {variable}"
        lines.append(message)
    return lines


def _where(url: str) -> str:
    """host:port/database of a URL, without user or password."""
    parts = urlsplit(url)
    socket_dir = parse_qs(parts.query).get("host", [""])[0]
    if not parts.hostname and socket_dir.startswith("/"):
        return f"{socket_dir}{parts.path or '/'}"  # a Unix socket: ?host=/run/postgresql
    return f"{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path or '/'}"


def _reason(exc: BaseException) -> str:
    original = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    cause = original.__cause__
    if isinstance(cause, (OSError, asyncpg.PostgresError)) and not isinstance(
        original, (OSError, asyncpg.PostgresError)
    ):
        original = cause  # SQLAlchemy's adapter wraps the driver's error in its own
    if isinstance(original, ConnectionRefusedError) or "Connect call failed" in str(original):
        return "connection refused"
    if isinstance(original, socket.gaierror):
        return "unknown host"
    if isinstance(original, TimeoutError):
        return "no answer in time"
    if isinstance(original, asyncpg.InvalidPasswordError):
        return "password authentication failed"
    if isinstance(original, asyncpg.InvalidCatalogNameError):
        return "the database does not exist"
    text = str(original).strip().splitlines()[0] if str(original).strip() else ""
    return f"{type(original).__name__}: {text}"[:200]


def database_unreachable(url: str | None, exc: BaseException) -> StartupError:
    if url is None:
        return StartupError(
            f"the embedded PostgreSQL could not start ({_reason(exc)}); check GATEWAY_DATA_DIR"
            " or set DATABASE_URL"
        )
    return StartupError(
        f"cannot connect to the database of DATABASE_URL ({_where(url)}): {_reason(exc)};"
        " check that PostgreSQL runs there and that DATABASE_URL is right"
    )


def read_file(path: str, what: str) -> str:
    """The text of a file the user named, or a StartupError saying why it cannot be read."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        problem = "no such file"
    except IsADirectoryError:
        problem = "is a directory"
    except PermissionError:
        problem = "permission denied"
    except UnicodeDecodeError:
        problem = "not UTF-8 text"
    except OSError as exc:
        problem = exc.strerror or type(exc).__name__
    raise StartupError(f"{path}: {problem}; give the path of {what}")


def check_port(host: str, port: int) -> None:
    """Refuse to start when ``host:port`` cannot be listened on (before migrations run and
    before anything says the gateway is ready). The probe binds as uvicorn does
    (SO_REUSEADDR) and closes at once: uvicorn binds again right after, and should another
    process take the port in between, uvicorn's own error is logged."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise StartupError(
            f"cannot listen on {host}:{port}: unknown address ({exc.strerror}); set --host or"
            " GATEWAY_HOST to an address of this machine"
        ) from exc
    family, kind, proto, _name, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                problem = "the port is already in use"
                hint = "stop the process using it or choose another port (--port or GATEWAY_PORT)"
            elif exc.errno == errno.EACCES:
                problem = "permission denied"
                hint = "choose a port above 1023 (--port or GATEWAY_PORT)"
            else:
                problem = exc.strerror or type(exc).__name__
                hint = "check --host/GATEWAY_HOST and --port/GATEWAY_PORT"
            raise StartupError(f"cannot listen on {host}:{port}: {problem}; {hint}") from exc
