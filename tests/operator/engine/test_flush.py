"""The flush's pieces: pending work handed over once, entry diffs, applying a ChangeSet."""

from __future__ import annotations

from septum.operator.engine.changes import ChangeSet
from septum.operator.engine.cluster import PodKey
from septum.operator.engine.entries import EntryDiff
from septum.operator.engine.flush import AuditModes, PendingWork, apply_diff
from septum.operator.engine.state import Engine


def test_pending_work_is_taken_once() -> None:
    work = PendingWork()
    work.full.add(300)
    work.peer_patch[301] = {400}
    taken = work.take()
    assert taken.full == {300} and taken.peer_patch == {301: {400}}
    assert not work.full and not work.peer_patch and not work.clones and not work.twin_of


def test_audit_modes_track_the_audited_endpoints() -> None:
    modes = AuditModes()
    key = PodKey("x", "a")
    modes.record(key, True)
    assert modes.audited == {key}
    modes.record(key, False)
    assert modes.audited == set() and modes.state[key] is False
    modes.forget(key)
    assert key not in modes.state


def test_apply_diff_follows_engine_updates() -> None:
    engine = Engine()
    pod = {"metadata": {"name": "a", "namespace": "x", "labels": {"app": "a"}}}
    current: dict = {}
    apply_diff(current, engine.upsert_pod(pod))
    policy = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "p", "namespace": "x"},
        "spec": {"podSelector": {}},
    }
    apply_diff(current, engine.upsert_policy(policy))
    key = PodKey("x", "a")
    assert current[key] == engine.endpoint_policy(key).entries()
    apply_diff(current, engine.delete_pod("x", "a"))
    assert key not in current


def test_apply_diff_removes_endpoints() -> None:
    key = PodKey("x", "a")
    current: dict = {key: frozenset()}
    changes = ChangeSet()
    changes.endpoints[key] = EntryDiff(frozenset(), frozenset())
    changes.removed_endpoints.add(key)
    apply_diff(current, changes)
    assert current == {}
