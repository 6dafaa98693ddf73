"""septum.lab.waiting.poll: the one polling loop behind wait_for, poll_until and until."""

from __future__ import annotations

import itertools

import pytest

from septum.lab.waiting import WaitTimeout, poll


def test_returns_the_first_truthy_value_and_treats_errors_as_not_yet() -> None:
    answers = iter([ValueError("not up"), 0, "ready"])

    def check() -> object:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert poll("the thing", check, timeout_s=5, interval_s=0.01) == "ready"


def test_the_timeout_names_what_was_awaited_and_the_last_thing_seen() -> None:
    counter = itertools.count()
    with pytest.raises(WaitTimeout, match=r"waiting for the count; last: 0"):
        poll("the count", lambda: 0 * next(counter), timeout_s=0.05, interval_s=0.01)

    def broken() -> object:
        raise OSError("connection refused")

    with pytest.raises(WaitTimeout, match="connection refused"):
        poll("the socket", broken, timeout_s=0.05, interval_s=0.01)
