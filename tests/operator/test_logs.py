"""Structured log lines."""

from __future__ import annotations

import json
import logging

from septum.operator.logs import JsonFormatter


def test_json_line_has_time_level_logger_msg_and_fields() -> None:
    record = logging.LogRecord(
        "septum.operator.x", logging.INFO, __file__, 1, "hi %s", ("there",), None
    )
    record.identity = 300
    line = json.loads(JsonFormatter().format(record))
    assert line["level"] == "info" and line["logger"] == "septum.operator.x"
    assert line["msg"] == "hi there" and line["identity"] == 300
    assert line["time"].endswith("+00:00")
