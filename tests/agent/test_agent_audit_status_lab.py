"""`septum agent` on the lab: audit mode per namespace and per policy (AUDIT flows naming the
policy, traffic passing), what the agents report (SeptumNode status, policy status.nodes,
SeptumEndpoint realizedRevision), and stale pinned state purged after a restart.

MapNearLimit is unit-tested only (tests/agent/test_status.py): `septum agent` has no option
to give a map a tiny capacity.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import sys
import uuid
from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest

from septum.dataplane import abi
from septum.dataplane.endpoints import entry_addresses
from septum.dataplane.libbpf import lib
from septum.dataplane.maps import BpfMap
from septum.lab.lab import Lab
from septum.lab.pytest_plugin import wait_for

from .lab_agents import PIN_ROOT, AgentProcess, OperatorProcess, agents_running, apply_crds
from .test_agent_lab_privileged import HUBBLE, Env, _hubble, _pod

pytestmark = [pytest.mark.privileged, pytest.mark.lab]

AUDIT = "policy.septum.io/audit-mode"
NODE1, NODE2 = "slab-node1", "slab-node2"


def _deny_all(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "deny-all", "namespace": namespace},
        "spec": {"podSelector": {"matchLabels": {"app": "srv"}}, "policyTypes": ["Ingress"]},
    }


def _deny_from(name: str, namespace: str, role: str, audit: bool) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if audit:
        meta["annotations"] = {AUDIT: "enabled"}
    return {
        "apiVersion": "septum.io/v2",
        "kind": "SeptumNetworkPolicy",
        "metadata": meta,
        "spec": {
            "endpointSelector": {"matchLabels": {"app": "srv"}},
            "ingressDeny": [{"fromEndpoints": [{"matchLabels": {"role": role}}]}],
        },
    }


class Both:
    """Two namespaces: `audited` (the namespace label) and `plain`."""

    def __init__(self, audited: Env, plain: Env) -> None:
        self.audited = audited
        self.plain = plain


@pytest.fixture(scope="module")
def both(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Both]:
    tmp = tmp_path_factory.mktemp("agents-audit")
    apply_crds(lab)
    operator = OperatorProcess(lab, tmp / "operator.log")
    operator.start()
    suffix = uuid.uuid4().hex[:6]
    names = {"audited": f"au-ns-{suffix}", "plain": f"au-pol-{suffix}"}
    running = agents_running(lab, tmp)
    agents: list[AgentProcess] = []
    try:
        agents = next(running)
        envs: dict[str, Env] = {}
        for key, namespace in names.items():
            labels = {AUDIT: "enabled"} if key == "audited" else {}
            ns = {"apiVersion": "v1", "kind": "Namespace",
                  "metadata": {"name": namespace, "labels": labels}}  # fmt: skip
            lab.kubectl("apply", "-f", "-", input_text=json.dumps(ns))
            env = envs[key] = Env(lab, namespace, agents)
            for name, node, pod_labels, server in (
                ("srv", 1, {"app": "srv"}, True),
                ("far", 2, {"role": "client"}, False),
                ("stranger", 2, {"role": "stranger"}, False),
            ):
                env.apply(_pod(name, namespace, node, pod_labels, server))
        for env in envs.values():
            for name in ("srv", "far", "stranger"):
                wait_for(f"{env.namespace}/{name} Ready", partial(env.ready, name), 120)
        yield Both(envs["audited"], envs["plain"])
    finally:
        for namespace in names.values():
            lab.kubectl("delete", "namespace", namespace, "--wait=true", "--timeout=120s",
                        check=False)  # fmt: skip
        try:
            next(running, None)
        finally:
            operator.stop()
            for agent in agents:
                agent.remove_leftovers()
            for agent in agents:
                sys.stderr.write(f"--- {agent.node.name} log tail ---\n{agent.logs()[-3000:]}\n")


def _audit_flows(env: Env, source: str) -> list[dict[str, Any]] | None:
    """AUDIT flows source -> srv that name the policy that would have dropped them (a
    connection's first packet; its later packets are traced as established)."""
    out = _hubble(env.agents[0], "--last", "3000", "-o", "json", "--namespace", env.namespace)
    found = [json.loads(line)["flow"] for line in out.stdout.splitlines() if line]
    audits = [
        f for f in found
        if f.get("verdict") == "AUDIT"
        and f.get("source", {}).get("pod_name") == source
        and f.get("destination", {}).get("pod_name") == "srv"
        and f.get("ingress_denied_by")
    ]  # fmt: skip
    return audits or None


def _verdicts(env: Env, source: str) -> set[str]:
    out = _hubble(env.agents[0], "--last", "3000", "-o", "json", "--namespace", env.namespace)
    found = [json.loads(line)["flow"] for line in out.stdout.splitlines() if line]
    return {
        f.get("verdict", "")
        for f in found
        if f.get("source", {}).get("pod_name") == source
        and f.get("destination", {}).get("pod_name") == "srv"
    }


@pytest.mark.skipif(not HUBBLE.is_file(), reason="the hubble CLI is not built")
def test_an_audited_namespace_passes_would_be_drops_as_audit_flows(both: Both) -> None:
    env = both.audited
    env.apply(_deny_all(env.namespace))
    try:
        # in force (the AUDIT flows below show it) but nothing is dropped
        for _ in range(3):
            assert env.reach("far", "srv", "tcp") and env.reach("stranger", "srv", "tcp")
        flows = wait_for("AUDIT flows far -> srv", lambda: _audit_flows(env, "far"), 30)
        assert isinstance(flows, list)
        (denied_by,) = flows[-1]["ingress_denied_by"]
        assert denied_by["name"] == "deny-all" and denied_by["namespace"] == env.namespace
        assert denied_by["kind"] == "NetworkPolicy"
        assert "DROPPED" not in _verdicts(env, "far")
        endpoint = env.lab.get_json("septumendpoint", "-n", env.namespace, "srv")
        assert endpoint["status"]["policy"]["audit"] is True
    finally:
        env.lab.kubectl("delete", "networkpolicy", "-n", env.namespace, "--all", "--wait=true")


@pytest.mark.skipif(not HUBBLE.is_file(), reason="the hubble CLI is not built")
def test_an_audited_policy_passes_while_another_policy_drops(both: Both) -> None:
    env = both.plain
    env.apply(_deny_from("audited", env.namespace, "client", audit=True))
    env.apply(_deny_from("strict", env.namespace, "stranger", audit=False))
    try:
        env.expect("stranger", "srv", "tcp", allowed=False)
        for _ in range(3):
            assert env.reach("far", "srv", "tcp")
        flows = wait_for("AUDIT flows far -> srv", lambda: _audit_flows(env, "far"), 30)
        assert isinstance(flows, list)
        (denied_by,) = flows[-1]["ingress_denied_by"]
        assert (denied_by["name"], denied_by["kind"]) == ("audited", "SeptumNetworkPolicy")
        assert "DROPPED" not in _verdicts(env, "far")
        assert "DROPPED" in _verdicts(env, "stranger")
        endpoint = env.lab.get_json("septumendpoint", "-n", env.namespace, "srv")
        assert endpoint["status"]["policy"]["audit"] is False  # the pod is not in audit mode
        # the annotation removed: the same rule drops
        env.apply(_deny_from("audited", env.namespace, "client", audit=False))
        env.expect("far", "srv", "tcp", allowed=False)
    finally:
        env.lab.kubectl("delete", "snp", "-n", env.namespace, "--all", "--wait=true")


def _node_status(env: Env, kind: str, name: str, node: str) -> dict[str, Any] | None:
    obj = env.lab.get_json(kind, "-n", env.namespace, name)
    entry = ((obj.get("status") or {}).get("nodes") or {}).get(node)
    generation = obj["metadata"].get("generation")
    if entry and entry.get("enforcing") and entry.get("revision") == generation:
        return dict(entry)
    return None


def _recent(stamp: str, within_s: float) -> bool:
    when = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    age = datetime.datetime.now(datetime.UTC) - when
    return age.total_seconds() < within_s


def test_septum_node_status(both: Both) -> None:
    def status(node: str) -> dict[str, Any] | None:
        obj = both.plain.lab.get_json("septumnode", node)
        found = obj.get("status") or {}
        return dict(found) if (found.get("agent") or {}).get("ready") else None

    for node in (NODE1, NODE2):
        found = wait_for(f"SeptumNode {node} ready", partial(status, node), 30)
        assert isinstance(found, dict)
        agent = found["agent"]
        assert agent["version"] and _recent(agent["lastHeartbeat"], 60), agent
        assert found["policyRevision"] >= 1
        maps = found["maps"]
        assert {"endpoints", "ipcache_hosts", "policy"} <= set(maps), maps
        for name, usage in maps.items():
            assert 0 <= usage["entries"] <= usage["capacity"], (name, usage)
        assert maps["endpoints"]["entries"] >= 1 and maps["ipcache_hosts"]["entries"] >= 6
    # the heartbeat moves
    first = status(NODE1)
    assert first is not None
    wait_for(
        "a newer heartbeat",
        lambda: (
            (status(NODE1) or {}).get("agent", {}).get("lastHeartbeat")
            != first["agent"]["lastHeartbeat"]
        ),
        30,
    )


def test_policy_status_nodes_follow_the_generation_and_revision_moves(both: Both) -> None:
    env = both.plain
    policy = _deny_from("strict", env.namespace, "stranger", audit=False)
    env.apply(policy)
    try:
        for node in (NODE1, NODE2):
            enforced = partial(_node_status, env, "snp", "strict", node)
            entry = wait_for(f"strict enforced on {node}", enforced, 30)
            assert isinstance(entry, dict) and entry["revision"] == 1
            assert _recent(entry["lastUpdated"], 120)
        endpoint = env.lab.get_json("septumendpoint", "-n", env.namespace, "srv")
        before = endpoint["status"]["policy"]["realizedRevision"]
        assert before >= 1
        policy["spec"]["ingressDeny"][0]["fromEndpoints"][0]["matchLabels"]["role"] = "client"
        env.apply(policy)
        for node in (NODE1, NODE2):
            enforced = partial(_node_status, env, "snp", "strict", node)
            entry = wait_for(f"generation 2 on {node}", enforced, 30)
            assert isinstance(entry, dict) and entry["revision"] == 2
        env.expect("far", "srv", "tcp", allowed=False)

        def realized() -> int | None:
            obj = env.lab.get_json("septumendpoint", "-n", env.namespace, "srv")
            number = int(obj["status"]["policy"]["realizedRevision"])
            return number if number > before else None

        wait_for("srv's realized revision moves", realized, 30)
    finally:
        env.lab.kubectl("delete", "snp", "-n", env.namespace, "--all", "--wait=true")


def _pinned(node: str) -> list[tuple[int, str | None]]:
    """(endpoint id, ipv4) of every pod entry in the node's pinned endpoint map."""
    pin = PIN_ROOT / node / abi.MAP_ENDPOINTS
    fd = lib().bpf_obj_get(str(pin).encode())
    assert fd >= 0, f"{pin}: {os.strerror(-fd)}"
    try:
        table = BpfMap(abi.MAP_ENDPOINTS, fd, abi.EndpointKey, abi.Endpoint, 0, "endpoints")
        return sorted(
            (int(v.endpoint_id), entry_addresses(v)[0]) for _, v in table.items() if v.endpoint_id
        )
    finally:
        os.close(fd)


def _ipcache_has(node: str, ip: str) -> bool:
    pin = PIN_ROOT / node / abi.MAP_IPCACHE_HOST
    fd = lib().bpf_obj_get(str(pin).encode())
    assert fd >= 0, f"{pin}: {os.strerror(-fd)}"
    try:
        table = BpfMap(abi.MAP_IPCACHE_HOST, fd, abi.HostKey, abi.IpcacheValue, 0, "ipcache")
        packed = ipaddress.ip_address(ip).packed
        return any(bytes(key.addr)[: len(packed)] == packed for key in table.keys())
    finally:
        os.close(fd)


def test_a_pod_gone_while_the_agent_was_down_is_purged(both: Both) -> None:
    env = both.plain
    node1 = env.agents[0]
    env.apply(_pod("gone", env.namespace, 1, {"app": "gone"}, False))
    wait_for("gone Ready", lambda: env.ready("gone"), 120)
    ip = env.ip("gone")
    wait_for("gone pinned", lambda: any(a == ip for _, a in _pinned(NODE1)), 30)
    assert _ipcache_has(NODE1, ip)
    node1.stop()
    try:
        env.lab.kubectl("delete", "pod", "-n", env.namespace, "gone", "--wait=true",
                        "--timeout=60s")  # fmt: skip
        assert any(a == ip for _, a in _pinned(NODE1)), "the entry stays while no agent runs"
    finally:
        node1.start()
        node1.wait_ready(60)
    assert not any(a == ip for _, a in _pinned(NODE1)), _pinned(NODE1)
    assert not _ipcache_has(NODE1, ip)
    # the live pods were kept
    assert any(a == env.ip("srv") for _, a in _pinned(NODE1))
    env.expect("far", "srv", "tcp", allowed=True)
