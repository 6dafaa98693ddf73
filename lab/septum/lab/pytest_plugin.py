"""pytest plugin: one lab per test session (``lab`` fixture), taken down and checked at the end.

Registered in tests/conftest.py. Any test that needs a cluster asks for ``lab``; the first one
starts it (2 nodes, CoreDNS available), the session's end takes it down and asserts that nothing
the lab created is left on the machine. A lab the user started before the session is reused and
left running; parallel sessions share one lab, and the last one out takes it down.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil  # type: ignore[import-untyped]  # no stubs pinned
import pytest

from septum.lab import config
from septum.lab import lab as lab_mod
from septum.lab.leftovers import leftovers
from septum.lab.outside import Peer, add_peer, remove_peer
from septum.lab.waiting import WaitTimeout, poll


def wait_for(what: str, check: object, timeout_s: float = 60, interval_s: float = 0.3) -> object:
    """Polls ``check()`` until it returns something truthy; fails naming the last value seen."""
    assert callable(check)
    try:
        return poll(what, check, timeout_s, interval_s)
    except WaitTimeout as err:
        pytest.fail(str(err))


def _coredns_available(lab: lab_mod.Lab) -> bool:
    dep = lab.get_json("deployment", "-n", "kube-system", "coredns")
    return bool(dep.get("status", {}).get("availableReplicas", 0) >= 1)


def _sessions_dir() -> Path:
    return config.cache_dir() / "lab-sessions"


def _other_sessions() -> list[int]:
    """pids of other live test sessions using the lab (one lab per machine is shared)."""
    others = []
    for entry in _sessions_dir().glob("*"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        if psutil.pid_exists(int(entry.name)):
            others.append(int(entry.name))
        else:
            entry.unlink(missing_ok=True)  # a session that crashed
    return others


@pytest.fixture(scope="session")
def lab() -> Iterator[lab_mod.Lab]:
    sessions = _sessions_dir()
    sessions.mkdir(parents=True, exist_ok=True)
    started_by_tests = sessions / "started-by-tests"
    before = None
    if not lab_mod.is_running():
        before = leftovers()
        started_by_tests.touch()
    mine = sessions / str(os.getpid())
    mine.touch()
    lab_mod.up(2)
    started = lab_mod.current()
    try:
        wait_for("CoreDNS to be available", lambda: _coredns_available(started), 90)
        yield started
    finally:
        mine.unlink(missing_ok=True)
        # The last test session out takes down a lab that tests started; a developer's
        # parallel session still using it, or a lab the user started, is left alone.
        last = not _other_sessions()
        if last and started_by_tests.exists():
            started_by_tests.unlink()
            lab_mod.down()
        else:
            before = None
        if last:
            with contextlib.suppress(OSError):
                sessions.rmdir()
    if before is not None:
        after = leftovers()
        new = {kind: [x for x in items if x not in before[kind]] for kind, items in after.items()}
        assert not any(new.values()), f"lab down left things behind: {new}"


@pytest.fixture()
def outside_peer(lab: lab_mod.Lab) -> Iterator[Callable[[str], Peer]]:
    """Factory: ``outside_peer("203.0.113.10")`` adds a peer outside the cluster, removed after."""
    made: list[Peer] = []

    def make(address: str) -> Peer:
        peer = add_peer(address, lab.nodes)
        made.append(peer)
        return peer

    yield make
    for peer in made:
        remove_peer(peer, lab.nodes)


@pytest.fixture()
def lab_namespace(lab: lab_mod.Lab) -> Iterator[Callable[[str], str]]:
    """Factory: ``lab_namespace("slab-hp")`` creates a namespace named with that prefix and a
    random suffix (sessions share the lab), deleted after the test with all it holds."""
    made: list[str] = []

    def make(prefix: str) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        lab.kubectl("create", "namespace", name)
        made.append(name)
        return name

    yield make
    for name in made:
        lab.kubectl("delete", "namespace", name, "--wait=false", check=False)
