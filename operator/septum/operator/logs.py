"""Structured logs: one JSON object per line (time, level, logger, msg and the record's fields).

Fields are whatever a call passes as `extra=`; anything not JSON-native is written as str().
`--log-format text` keeps the same fields for people reading a terminal.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
from typing import Any

# Attributes every LogRecord has; the rest of a record's __dict__ are the caller's fields.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "taskName",
}


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    return {key: value for key, value in vars(record).items() if key not in _STANDARD}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record_fields(record).items():
            line.setdefault(key, value)
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, sort_keys=False)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = record_fields(record)
        if fields:
            text += " " + " ".join(f"{key}={value}" for key, value in fields.items())
        return text


def configure(log_format: str, level: int = logging.INFO) -> None:
    """Route every logger (kopf's too) to stderr in `log_format` ("json" or "text")."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # kopf reports each watch-stream (re)start at INFO; only its problems are news here.
    logging.getLogger("kopf").setLevel(max(level, logging.WARNING))
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
