"""The identity GC clock (the reconciler's pure part)."""

from __future__ import annotations

from septum.operator.reconciler import GcClock


def test_identity_is_due_after_being_unused_for_the_whole_grace() -> None:
    clock = GcClock(grace_s=10, unused_since={})
    assert clock.due({300}, now_s=0) == []
    assert clock.due({300}, now_s=9) == []
    assert clock.due({300}, now_s=10) == [300]


def test_use_in_between_restarts_the_grace() -> None:
    clock = GcClock(grace_s=10, unused_since={})
    clock.due({300}, now_s=0)
    clock.due(set(), now_s=5)  # a pod came back
    assert clock.due({300}, now_s=12) == []
    assert clock.due({300}, now_s=22) == [300]
