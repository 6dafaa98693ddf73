"""`septum operator` against the lab's real API server: identities, leader election, status.

The operator runs as a subprocess (`septum operator --kubeconfig ...`), as it would in a
cluster. Each test has its own `op-` namespaces and its own Lease (in its namespace), so
parallel sessions sharing the lab do not share a leader. Pods that only need an identity use
a scheduler that does not exist: they stay Pending (no node, no network namespace), cost
nothing on this 2-core machine and are deleted at once. One Deployment runs for real.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from septum.lab.lab import Lab
from septum.lab.pytest_plugin import wait_for

pytestmark = [pytest.mark.privileged, pytest.mark.lab]

ROOT = Path(__file__).resolve().parents[2]
SEPTUM = str(Path(sys.executable).parent / "septum")
AGNHOST = "registry.k8s.io/e2e-test-images/agnhost:2.53"
NOWHERE = "op-no-such-scheduler"  # pods stay Pending: an identity needs no running pod


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Operator:
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    def readyz(self) -> dict[str, Any]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2) as r:
                return dict(json.load(r))
        except OSError as err:
            return {"ready": False, "error": str(err)}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture(scope="module")
def crds(lab: Lab) -> Lab:
    """Septum's CRDs and upstream's ClusterNetworkPolicy CRD, left installed (others use them)."""
    lab.kubectl("apply", "--server-side", "--force-conflicts", "-f", str((ROOT / "crds").resolve()))
    npapi = subprocess.run(
        ["bash", str(ROOT / "scripts" / "fetch-npapi-crds.sh")],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    ).stdout.strip()
    lab.kubectl("apply", "--server-side", "--force-conflicts", "-f", npapi)
    for name in (
        "septumidentities.septum.io",
        "septumnetworkpolicies.septum.io",
        "clusternetworkpolicies.policy.networking.k8s.io",
    ):
        lab.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s")
    return lab


@pytest.fixture()
def namespaces(crds: Lab) -> Iterator[Callable[[], str]]:
    made: list[str] = []

    def make() -> str:
        name = f"op-{uuid.uuid4().hex[:8]}"
        crds.kubectl("create", "namespace", name)
        made.append(name)
        return name

    yield make
    for name in made:
        crds.kubectl("delete", "namespace", name, "--wait=false", check=False)
        # The operators are stopped by now: their identities would wait for another's GC.
        crds.kubectl("delete", "septumidentities", "-l", f"septum.io/namespace={name}", check=False)


@pytest.fixture()
def operators(crds: Lab, tmp_path: Path) -> Iterator[Callable[..., Operator]]:
    started: list[Operator] = []

    def start(lease_namespace: str, *extra: str) -> Operator:
        port = _free_port()
        log_path = tmp_path / f"operator-{len(started)}.log"
        with log_path.open("wb") as out:
            proc = subprocess.Popen(
                [
                    SEPTUM,
                    "operator",
                    f"--kubeconfig={crds.kubeconfig}",
                    f"--namespace={lease_namespace}",
                    f"--health-port={port}",
                    *extra,
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        op = Operator(proc, port, log_path)
        started.append(op)
        wait_for("the operator to be ready", lambda: op.readyz().get("ready"), 60)
        return op

    yield start
    for op in started:
        op.stop()


def _pod(ns: str, name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {
            "schedulerName": NOWHERE,
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "c", "image": AGNHOST, "args": ["pause"]}],
        },
    }


def _apply(lab: Lab, *objects: dict[str, Any]) -> None:
    lab.kubectl("apply", "-f", "-", input_text=yaml.safe_dump_all(objects))


def _identities(lab: Lab, ns: str) -> dict[str, dict[str, str]]:
    items = lab.get_json("septumidentities", "-l", f"septum.io/namespace={ns}")["items"]
    return {item["metadata"]["name"]: item["securityLabels"] for item in items}


def _snp(ns: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "septum.io/v2",
        "kind": "SeptumNetworkPolicy",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }


def _allow_http(app: str, path: str = "/") -> dict[str, Any]:
    return {
        "endpointSelector": {"matchLabels": {"app": app}},
        "ingress": [
            {
                "toPorts": [
                    {
                        "ports": [{"port": "8080", "protocol": "TCP"}],
                        "rules": {"http": [{"method": "GET", "path": path}]},
                    }
                ]
            }
        ],
    }


def _valid(lab: Lab, ns: str, name: str) -> dict[str, Any] | None:
    obj = lab.get_json("snp", "-n", ns, name)
    status = obj.get("status") or {}
    for condition in status.get("conditions") or []:
        if condition["type"] == "Valid":
            return {"condition": condition, "status": status, "object": obj}
    return None


def test_identities_one_per_label_set_stable_across_recreate_and_restart(
    crds: Lab, namespaces: Callable[[], str], operators: Callable[..., Operator]
) -> None:
    ns = namespaces()
    op = operators(ns)
    labels = {"app": "web"}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": ns},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{"name": "web", "image": AGNHOST, "args": ["pause"]}],
                },
            },
        },
    }
    _apply(crds, deployment, _pod(ns, "solo", {"app": "solo"}))

    def two_identities() -> dict[str, dict[str, str]] | None:
        found = _identities(crds, ns)
        return (
            found
            if sorted(v.get("k8s:app", "") for v in found.values()) == ["solo", "web"]
            else None
        )

    first = wait_for("one identity per label set (web x2, solo)", two_identities, 60)
    assert isinstance(first, dict)
    web = next(v for v in first.values() if v["k8s:app"] == "web")
    assert web["k8s:io.kubernetes.pod.namespace"] == ns
    assert web["k8s:io.cilium.k8s.policy.cluster"] == "default"
    assert "k8s:pod-template-hash" not in web  # Deployment pods share one identity

    # Recreated with the same labels: the same identity (no new number).
    crds.kubectl("delete", "pod", "-n", ns, "solo", "--wait=true")
    _apply(crds, _pod(ns, "solo", {"app": "solo"}))
    pods_running = wait_for(
        "the web pods running",
        lambda: (
            len(
                [
                    p
                    for p in crds.get_json("pods", "-n", ns, "-l", "app=web")["items"]
                    if p.get("status", {}).get("phase") == "Running"
                ]
            )
            == 2
        ),
        120,
    )
    assert pods_running
    assert _identities(crds, ns) == first

    # A policy's status, then a restart: nothing renumbered, no status rewritten.
    _apply(crds, _snp(ns, "web", _allow_http("web")))
    wait_for(
        "policy web Valid with 2 endpoints",
        lambda: (v := _valid(crds, ns, "web")) and v["status"].get("selectedEndpoints") == 2,
    )
    # status.nodes is the agents' (any running in the shared lab write it, moving the
    # resourceVersion): the operator's own fields are what must not move.
    before = _operator_fields(crds, ns, "web")
    op.stop()
    op2 = operators(ns)
    # A barrier: once the new operator validated a new policy, it has seen the old one too.
    _apply(crds, _snp(ns, "barrier", _allow_http("solo")))
    wait_for("the restarted operator's first status", lambda: _valid(crds, ns, "barrier"))
    assert _operator_fields(crds, ns, "web") == before
    assert _identities(crds, ns) == first
    log = op2.log()
    assert '"identity allocated"' not in log, log
    assert f'"policy": "{ns}/web"' not in log, log  # no status write for the old policy


def _operator_fields(lab: Lab, ns: str, name: str) -> dict[str, Any]:
    status = lab.get_json("snp", "-n", ns, name).get("status") or {}
    return {key: status.get(key) for key in ("conditions", "selectedEndpoints", "lastValid")}


def test_two_operators_racing_allocate_one_identity_per_label_set(
    crds: Lab, namespaces: Callable[[], str], operators: Callable[..., Operator]
) -> None:
    ns = namespaces()
    first, second = operators(ns), operators(ns)
    leaders = wait_for(
        "exactly one leader",
        lambda: [o for o in (first, second) if o.readyz().get("leader")] or None,
    )
    assert isinstance(leaders, list) and len(leaders) == 1
    _apply(crds, *(_pod(ns, f"p{i}", {"app": f"a{i}"}) for i in range(20)))

    def twenty() -> dict[str, dict[str, str]] | None:
        found = _identities(crds, ns)
        return found if len(found) >= 20 else None

    found = wait_for("20 identities", twenty, 90)
    assert isinstance(found, dict)
    label_sets = [json.dumps(v, sort_keys=True) for v in found.values()]
    assert len(found) == 20 and len(set(label_sets)) == 20, found  # one per set, one set each
    assert sorted(v["k8s:app"] for v in found.values()) == sorted(f"a{i}" for i in range(20))

    # The leader goes (releasing its lease); the other takes over and allocates.
    (leader,) = leaders
    follower = second if leader is first else first
    leader.stop()
    wait_for("the follower to lead", lambda: follower.readyz().get("leader"), 30)
    _apply(crds, _pod(ns, "late", {"app": "late"}))
    wait_for("the new leader's identity", lambda: len(_identities(crds, ns)) == 21, 30)
    final = _identities(crds, ns)
    assert {k: v for k, v in final.items() if k in found} == found


def test_invalid_edit_keeps_last_valid_and_other_policies(
    crds: Lab, namespaces: Callable[[], str], operators: Callable[..., Operator]
) -> None:
    ns = namespaces()
    operators(ns)
    _apply(crds, _pod(ns, "w", {"app": "web"}))
    good = _allow_http("web", "/api")
    _apply(crds, _snp(ns, "edited", good), _snp(ns, "other", _allow_http("web")))
    for name in ("edited", "other"):
        wait_for(
            f"{name} Valid=True",
            lambda n=name: (v := _valid(crds, ns, n)) and v["condition"]["status"] == "True",
        )
    # An HTTP path must be a regular expression: the schema cannot tell, the engine can.
    _apply(crds, _snp(ns, "edited", _allow_http("web", "(")))
    state = wait_for(
        "edited Valid=False",
        lambda: (
            v if (v := _valid(crds, ns, "edited")) and v["condition"]["status"] == "False" else None
        ),
    )
    assert isinstance(state, dict)
    condition = state["condition"]
    assert condition["reason"] == "InvalidPolicy"
    assert condition["observedGeneration"] == 2
    assert "spec.ingress[0].toPorts[0].rules.http[0].path" in condition["message"]
    assert state["status"]["lastValid"]["generation"] == 1
    assert state["status"]["lastValid"]["spec"] == good
    assert state["status"]["selectedEndpoints"] == 1  # the kept version still selects the pod
    other = _valid(crds, ns, "other")
    assert other is not None and other["condition"]["status"] == "True"

    def invalid_event() -> list[dict[str, Any]]:
        events = crds.get_json("events", "-n", ns)["items"]
        return [
            e
            for e in events
            if e["reason"] == "InvalidPolicy" and e["involvedObject"]["name"] == "edited"
        ]

    (event,) = wait_for("an InvalidPolicy Event", invalid_event)  # type: ignore[misc]
    assert event["type"] == "Warning"
    assert event["involvedObject"]["kind"] == "SeptumNetworkPolicy"


def test_cluster_network_policy_gets_upstream_conditions(
    crds: Lab, namespaces: Callable[[], str], operators: Callable[..., Operator]
) -> None:
    ns = namespaces()
    operators(ns)
    name = ns  # cluster-scoped: named after the test's namespace, deleted below
    cnp = {
        "apiVersion": "policy.networking.k8s.io/v1alpha2",
        "kind": "ClusterNetworkPolicy",
        "metadata": {"name": name},
        "spec": {
            "tier": "Admin",
            "priority": 10,
            "subject": {"namespaces": {"matchLabels": {"kubernetes.io/metadata.name": ns}}},
            "ingress": [
                {
                    "name": "deny-all",
                    "action": "Deny",
                    "from": [{"namespaces": {}}],
                }
            ],
        },
    }
    _apply(crds, cnp)
    try:

        def condition() -> dict[str, Any] | None:
            obj = crds.get_json("clusternetworkpolicies", name)
            for item in (obj.get("status") or {}).get("conditions") or []:
                if item["type"] == "Valid":
                    return dict(item)
            return None

        found = wait_for("the CNP's Valid condition", condition)
        assert isinstance(found, dict)
        assert found["status"] == "True", found
    finally:
        crds.kubectl("delete", "clusternetworkpolicies", name, "--wait=false", check=False)


def test_unused_identity_is_collected_after_the_grace_period(
    crds: Lab, namespaces: Callable[[], str], operators: Callable[..., Operator]
) -> None:
    ns = namespaces()
    operators(ns, "--identity-gc-interval=3s")
    _apply(crds, _pod(ns, "gone", {"app": "gone"}), _pod(ns, "kept", {"app": "kept"}))
    wait_for("2 identities", lambda: len(_identities(crds, ns)) == 2, 60)
    crds.kubectl("delete", "pod", "-n", ns, "gone", "--wait=true")
    remaining = wait_for(
        "the unused identity deleted",
        lambda: v if len(v := _identities(crds, ns)) == 1 else None,
        60,
    )
    assert isinstance(remaining, dict)
    assert [v["k8s:app"] for v in remaining.values()] == ["kept"]
