"""When the database cannot serve a statement now: a timeout or an outage (HTTP 503).

``DatabaseUnavailable`` is what the gateway raises for one of ``UNAVAILABLE_ERRORS``; the API
answers it with 503 and ``Retry-After`` (``gateway.api.unavailable``). asyncpg's pool logs
each failed reconnection with a stack trace; the filter here keeps one line per failure.
"""

from __future__ import annotations

import logging

import asyncpg

# What "the database cannot serve this now" looks like from asyncpg: connection failures
# (class 08, and OSError from the socket), operator intervention (class 57: statement_timeout's
# query_canceled, admin_shutdown, cannot_connect_now), lock_not_available (lock_timeout), lack
# of resources (class 53: too_many_connections), TimeoutError (pool acquire, connect), and the
# client error below.
SERVER_UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.OperatorInterventionError,
    asyncpg.LockNotAvailableError,
    asyncpg.InsufficientResourcesError,
)
# InternalClientError: a pooled connection whose session the server has just ended (its
# error message arrived, its socket not closed yet) refuses the next statement with "another
# operation is in progress", before sending anything (see discard_if_broken).
UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (
    *SERVER_UNAVAILABLE_ERRORS,
    asyncpg.InternalClientError,
    OSError,
    TimeoutError,
)


class _OneLine(logging.Filter):
    """asyncpg's pool logs every failed attempt to reconnect its minimum of connections with a
    stack trace; during an outage that is one trace per second per process, for an expected
    condition. Keep the record, on one line with the error's text (a logging filter: asyncpg
    has no option for it)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            if isinstance(error, UNAVAILABLE_ERRORS):
                record.msg = f"{record.getMessage()}: {unavailable(error).reason}: {error}"
                record.args = ()
                record.exc_info = None
        return True


logging.getLogger("asyncpg.pool").addFilter(_OneLine())


class DatabaseUnavailable(Exception):
    """The database could not serve a statement: a timeout or an outage. Safe to retry."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def unavailable(exc: BaseException) -> DatabaseUnavailable:
    """The ``DatabaseUnavailable`` for one of ``UNAVAILABLE_ERRORS`` (chain it: ``from exc``)."""
    if isinstance(exc, asyncpg.LockNotAvailableError):
        reason = "lock timeout"
    elif isinstance(exc, asyncpg.QueryCanceledError):
        reason = "statement timeout"
    elif isinstance(exc, TimeoutError):
        reason = "no database connection available in time"
    else:
        reason = f"database unreachable ({type(exc).__name__})"
    return DatabaseUnavailable(reason)
