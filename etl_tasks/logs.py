"""Structured logs: every chunk line carries its migration, stream and chunk ids.

Ids travel as ``extra`` fields; the text format appends them as ``key=value``,
the JSON format (``BATON_LOG_FORMAT=json``) emits one object per line.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import orjson

from etl_tasks.settings import Settings

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


_OURS = ("etl_tasks", "worker", "api", "ops")


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    """Extra fields of Baton's own records (Celery's carry bulky ones of their own)."""
    if record.name.split(".", 1)[0] not in _OURS:
        return {}
    return {
        k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")
    }


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = " ".join(f"{k}={v}" for k, v in _fields(record).items())
        return f"{line} {extra}" if extra else line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            body["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(body, default=str).decode()


def configure_logging(settings: Settings) -> None:
    """Install Baton's formatter on the root logger (once per process)."""
    root = logging.getLogger()
    if any(getattr(h, "_baton", False) for h in root.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler._baton = True  # type: ignore[attr-defined]
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    quiet_celery_task_lines(root.level)


#: Celery's line for each task received and each task ended: Baton logs each step with
#: its chunk, outcome and time already.
CELERY_TASK_LOGGERS = ("celery.worker.strategy", "celery.app.trace")


def quiet_celery_task_lines(level: int) -> None:
    """Leave Celery's lines per task out unless ``level`` is DEBUG: they repeat Baton's
    line per step, and a worker chaining dozens of chunks a second paid for both. Its
    warnings and errors (a task that raised) still show."""
    for name in CELERY_TASK_LOGGERS:
        logging.getLogger(name).setLevel(
            logging.NOTSET if level <= logging.DEBUG else logging.WARNING
        )
