"""Logging for every command: `--log-level`, `--log-format text|json`, `--quiet`.

Records go to stderr, one line each, with a UTC timestamp and the level; `json` gives one JSON
object a line (``time``, ``level``, ``logger``, ``message`` and any ``extra`` fields) for log
shippers. Failures are logged at WARNING or ERROR; the command's own result (the summary, the
demo table) is its output on stdout, which `--quiet` suppresses. Messages never carry PHI.

The handler is attached to the adapter's loggers (and waitress'), not the root logger: an
embedding application's logging stays as it is, and records still propagate to it.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

LOGGERS = ("adapter", "waitress")
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


def _utc(record: logging.LogRecord) -> str:
    moment = datetime.fromtimestamp(record.created, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = f"{_utc(record)} {record.levelname} {record.getMessage()}"
        if record.exc_info and record.levelno <= logging.DEBUG:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _utc(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in vars(record).items():
            if name not in _STANDARD and not name.startswith("_"):
                entry[name] = value if isinstance(value, str | int | float | bool) else str(value)
        if record.exc_info and record.levelno <= logging.DEBUG:
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is at the time (test capture replaces it)."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass


_handler: logging.Handler | None = None


def configure(level: str = "INFO", fmt: str = "text", quiet: bool = False) -> None:
    """(Re)configure the adapter's logging; safe to call more than once."""
    global _handler
    handler = _StderrHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    effective = max(logging.getLevelName(level), logging.WARNING) if quiet else level
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if _handler is not None:
            logger.removeHandler(_handler)
        logger.addHandler(handler)
        logger.setLevel(effective)
    _handler = handler
