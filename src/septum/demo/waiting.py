"""Polling with a deadline whose error names the last thing seen."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from septum.demo.errors import StepTimeout

T = TypeVar("T")


def until(what: str, check: Callable[[], T], timeout_s: float, interval_s: float = 0.5) -> T:
    """Calls ``check()`` until it returns something truthy, and returns that."""
    deadline = time.monotonic() + timeout_s
    last: object = None
    while True:
        try:
            value = check()
        except Exception as err:  # the last error is part of the report
            last = err
        else:
            if value:
                return value
            last = value
        if time.monotonic() >= deadline:
            raise StepTimeout(
                f"timed out after {timeout_s:.0f}s waiting for {what}; last: {last!r}"
            )
        time.sleep(interval_s)
