"""Logging setup: one line per event, human-readable by default, JSON lines for machines.

Code that logs an event for machines passes its fields as `extra={"fields": {...}}`; the text
format shows them as `key=value`, the JSON format as keys of the object.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

FORMATS = ("text", "json")


class TextFormatter(logging.Formatter):
    """`2024-05-16 14:00:00 INFO  poll hksar-press-en: ok, 3 new (1.2s)`."""

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created).astimezone().strftime("%Y-%m-%d %H:%M:%S")
        line = f"{when} {record.levelname:<7} {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and the event's fields."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            data.update(fields)
        if record.exc_info:
            data["traceback"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False, default=str)


def setup_logging(
    log_format: str = "text", *, verbose: bool = False, stream: TextIO | None = None
) -> None:
    """Send aggregator's logs to stderr (systemd's journal, cron's mail) in the chosen format."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.WARNING)
    logging.getLogger("apscheduler").setLevel(logging.DEBUG if verbose else logging.WARNING)


def show_events() -> None:
    """Let aggregator's INFO events through (the worker's log); commands print their own lines."""
    logger = logging.getLogger("aggregator")
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)


def event(logger: logging.Logger, level: int, message: str, **fields: Any) -> None:
    """Log `message` with machine-readable `fields` (an `event` name among them)."""
    logger.log(level, message, extra={"fields": fields})
