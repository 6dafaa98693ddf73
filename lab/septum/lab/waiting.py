"""Polling with a deadline whose error names the last thing seen: the one loop the lab's test
fixture, the lab-agent helpers and the demo's steps all wait with."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from septum.lab.errors import LabError

T = TypeVar("T")


class WaitTimeout(LabError):
    """Something awaited did not happen before its deadline (the message says what was seen)."""


def poll(what: str, check: Callable[[], T], timeout_s: float, interval_s: float = 0.3) -> T:
    """Calls ``check()`` until it returns something truthy, and returns that; an exception from
    ``check`` counts as "not yet" and, at the deadline, as the last thing seen."""
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
            raise WaitTimeout(
                f"timed out after {timeout_s:.0f}s waiting for {what}; last: {last!r}"
            )
        time.sleep(interval_s)
