"""Septum helm-installed on the lab for one test module: a first install, as a user's, and
everything it brought removed afterwards, even when a step failed."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from septum.demo.release import Release
from septum.demo.waiting import until
from septum.lab import nodestate
from septum.lab.lab import Lab

# Its own namespace: the demo's release is the one in kube-system (tests/conftest.py).
E2E_NAMESPACE = "septum-e2e"
CRDS = (
    "septumnetworkpolicies.septum.io", "septumclusterwidenetworkpolicies.septum.io",
    "septumidentities.septum.io", "septumendpoints.septum.io", "septumnodes.septum.io",
    "clusternetworkpolicies.policy.networking.k8s.io",
)  # fmt: skip


def septum_processes() -> list[str]:
    """Septum's agents, operators and relays running on this machine (the lab's pods)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        words = [a.decode(errors="replace") for a in argv if a]
        if any(w.endswith("/septum") for w in words[:2]) and any(
            w in ("agent", "operator", "relay") for w in words[1:3]
        ):
            found.append(" ".join(words))
    return found


def remove_what_an_uninstall_left(lab: Lab) -> None:
    """After the module, even when a step failed: a conflist left chained to a plugin whose
    agent is gone would keep every later test's pods on that node in ContainerCreating."""
    try:
        until("no Septum process left", lambda: not septum_processes(), 60)
    except Exception as err:  # noqa: BLE001 - a running agent owns its files: leave them
        print(f"not removing Septum's node state: {err}")
        return
    left = nodestate.septum_leftovers(lab.state)
    if left:
        print("removing what the uninstall left:", *map(str, left))
        nodestate.remove_septum_leftovers(lab.state)


@contextmanager
def installed_release(lab: Lab, values: Mapping[str, str]) -> Iterator[Release]:
    """`helm install` into E2E_NAMESPACE; on the way out `helm uninstall`, the CRDs this
    release brought (Helm leaves CRDs by design), the namespace and any node leftovers."""
    crds_before = lab.crd_names()
    release = Release(lab, namespace=E2E_NAMESPACE, values=dict(values))
    # A first install, as a user's: what earlier lab tests' agents and operators left in the
    # API (their processes are gone) would turn the agents' creates into updates.
    for kind in ("septumendpoints", "septumnodes", "septumidentities"):
        lab.kubectl("delete", kind, "--all", "-A", "--ignore-not-found", check=False)
    try:
        release.install()
        yield release
    finally:
        if release.installed():
            release.uninstall()
        remove_what_an_uninstall_left(lab)
        added = [c for c in CRDS if c in lab.crd_names() - crds_before]
        if added:
            lab.kubectl("delete", "crd", *added, "--wait=true", check=False, timeout_s=120)
        lab.kubectl("delete", "namespace", E2E_NAMESPACE, "--ignore-not-found", "--wait=true",
                    check=False, timeout_s=120)  # fmt: skip


# Test modules import these helpers as `helm_helpers` (every conftest is `conftest`).
sys.modules.setdefault("helm_helpers", sys.modules[__name__])
