"""The Lease takeover rule (pure part of leader election)."""

from __future__ import annotations

from septum.operator.leader import LeaseRecord, may_take

HELD = LeaseRecord(holder="a", duration_s=15, renew_time="t", transitions=0)


def test_free_or_own_lease_may_be_taken() -> None:
    assert may_take(None, 0, 0, "b")
    assert may_take(LeaseRecord("", 15, "t", 1), 100, 100, "b")
    assert may_take(HELD, 100, 100, "a")


def test_someone_elses_lease_only_after_its_duration_on_our_clock() -> None:
    assert not may_take(HELD, observed_at_s=100, now_s=114.9, me="b")
    assert may_take(HELD, observed_at_s=100, now_s=115, me="b")
