"""pytest plugin: one lab per test session (``lab`` fixture), taken down and checked at the end.

Registered in tests/conftest.py. Any test that needs a cluster asks for ``lab``; the first one
starts it (2 nodes, CoreDNS available), the session's end takes it down and asserts that nothing
the lab created is left on the machine. A lab that was already running before the session is
reused and left running.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from septum.lab import lab as lab_mod
from septum.lab.leftovers import leftovers
from septum.lab.outside import Peer, add_peer, remove_peer


def wait_for(what: str, check: object, timeout_s: float = 60, interval_s: float = 0.3) -> object:
    """Polls ``check()`` until it returns something truthy; fails naming the last value seen."""
    assert callable(check)
    deadline = time.monotonic() + timeout_s
    last: object = None
    while True:
        try:
            last = check()
        except Exception as err:  # the last error is part of the report
            last = err
        else:
            if last:
                return last
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout_s:.0f}s waiting for {what}; last seen: {last!r}")
        time.sleep(interval_s)


def _coredns_available(lab: lab_mod.Lab) -> bool:
    dep = lab.get_json("deployment", "-n", "kube-system", "coredns")
    return bool(dep.get("status", {}).get("availableReplicas", 0) >= 1)


@pytest.fixture(scope="session")
def lab() -> Iterator[lab_mod.Lab]:
    owned = not lab_mod.is_running()
    before = leftovers() if owned else None
    started = lab_mod.up(2)
    try:
        wait_for("CoreDNS to be available", lambda: _coredns_available(started), 90)
        yield started
    finally:
        if owned:
            lab_mod.down()
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
