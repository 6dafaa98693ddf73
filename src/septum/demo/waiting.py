"""Polling with a deadline, as the demo's steps report it (septum.lab.waiting does the polling)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from septum.demo.errors import StepTimeout
from septum.lab.waiting import WaitTimeout, poll

T = TypeVar("T")


def until(what: str, check: Callable[[], T], timeout_s: float, interval_s: float = 0.5) -> T:
    """Calls ``check()`` until it returns something truthy, and returns that."""
    try:
        return poll(what, check, timeout_s, interval_s)
    except WaitTimeout as err:
        raise StepTimeout(str(err)) from None
