"""Logging setup — called by the CLI only; library code just uses getLogger.

Every line carries an ISO-8601 timestamp (UTC, milliseconds), the agent id,
role and (when set) the task id, and every field passed with ``extra=``. On a
terminal lines are readable; elsewhere (containers, CI, files) they are JSON,
one object per line.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

task_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("task_id", default=None)


class _ContextFilter(logging.Filter):
    def __init__(self, agent_id: str, role: str) -> None:
        super().__init__()
        self.agent_id = agent_id
        self.role = role

    def filter(self, record: logging.LogRecord) -> bool:
        record.agent_id = self.agent_id
        record.role = self.role
        record.task_id = task_id_var.get()
        return True


# What every LogRecord has; anything else on a record came with ``extra=``.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}
_OURS = frozenset({"agent_id", "role", "task_id"})


def iso_time(created: float) -> str:
    """``2026-05-01T12:34:56.789Z``: ISO-8601, UTC, milliseconds."""
    return (
        datetime.fromtimestamp(created, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def extras(record: logging.LogRecord) -> dict[str, Any]:
    """The fields a caller passed with ``extra=``."""
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD and k not in _OURS}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": iso_time(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "agent_id": getattr(record, "agent_id", None),
            "role": getattr(record, "role", None),
        }
        task_id = getattr(record, "task_id", None)
        if task_id:
            data["task_id"] = task_id
        for key, value in extras(record).items():
            data.setdefault(key, value)
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(agent_id)s %(name)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return iso_time(record.created)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = extras(record)
        task_id = getattr(record, "task_id", None)
        if task_id:
            fields = {"task": task_id, **fields}
        if fields:
            line += " [" + " ".join(f"{k}={v}" for k, v in fields.items()) + "]"
        return line


def configure(
    level: str = "info",
    fmt: str = "auto",
    agent_id: str = "-",
    role: str = "-",
    library_level: str = "warning",
) -> None:
    """Configure the root logger for a robeing process.

    Args:
        level: debug, info, warning or error.
        fmt: ``text``, ``json`` or ``auto`` (text on a terminal, JSON otherwise).
        agent_id: bound to every line.
        role: bound to every line.
        library_level: threshold for aio-pika/aiormq, which report every
            reconnect attempt (one-shot CLI commands pass ``critical``: their
            own one-line error says it all).
    """
    if fmt == "auto":
        fmt = "text" if sys.stderr.isatty() else "json"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_ContextFilter(agent_id, role))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aio-pika/aiormq are chatty at INFO during reconnects; keep their warnings.
    lib_level = max(root.level, logging.getLevelNamesMapping()[library_level.upper()])
    for noisy in ("aio_pika", "aiormq"):
        logging.getLogger(noisy).setLevel(lib_level)
