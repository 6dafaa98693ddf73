"""The user's whole path, through helm: install, Star Wars, a policy, flows through the relay
read by the real hubble CLI, an agent restart, `helm upgrade` under traffic, `helm uninstall`.

One release for the module; the tests are its steps, in order (each needs the one before).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from helm_helpers import installed_release, septum_processes  # type: ignore[import-not-found]

from septum.demo import flows, starwars
from septum.demo.release import Release
from septum.demo.waiting import until
from septum.lab import audit
from septum.lab.lab import Lab

pytestmark = [pytest.mark.privileged, pytest.mark.lab]

SEPTUM = str(Path(sys.executable).parent / "septum")
PIN_ROOT = Path("/sys/fs/bpf/septum")


class Walk:
    """What the steps share: the release, the lab's node names, when the walk began."""

    def __init__(self, lab: Lab, release: Release) -> None:
        self.lab = lab
        self.release = release
        self.nodes = sorted(n.name for n in lab.nodes)
        self.since = datetime.now(UTC).isoformat()
        self.hubble = flows.hubble_binary()
        self.audit_from: audit.LogPosition | None = None

    def relay(self) -> str:
        return f"{self.release.relay_pod_ip()}:4245"

    def deathstar_flows(self) -> list[flows.FlowLine]:
        seen = flows.hubble_observe(self.hubble, self.relay(), *flows.deathstar_filters(self.since))
        return [flows.FlowLine.of(f) for f in seen]


@pytest.fixture(scope="module")
def walk(lab: Lab) -> Iterator[Walk]:
    audit_from = audit.position(lab.state.audit_log)
    with installed_release(lab, {"agent.ctGcInterval": "5"}) as release:
        try:
            starwars.deploy(lab)
            walk = Walk(lab, release)
            walk.audit_from = audit_from
            yield walk
        finally:
            starwars.delete_policy(lab)
            starwars.remove(lab)


def test_helm_install_runs_an_agent_per_node_the_operator_and_the_relay(walk: Walk) -> None:
    agents = walk.release.agent_pods()
    assert sorted(agents) == walk.nodes
    for pod in agents.values():
        assert pod["spec"]["hostNetwork"] is True
        ready = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
        assert ready["Ready"] == "True"
    operators = walk.release.pods("app.kubernetes.io/name=septum-operator")
    assert len(operators) == 2 and {p["spec"]["nodeName"] for p in operators} == set(walk.nodes)
    # Every node's agent has chained itself into the node's CNI configuration.
    for node in walk.nodes:
        net_d = walk.lab.state.node_dir(node) / "cni" / "net.d"
        assert (net_d / "05-septum.conflist").is_file()
        assert (PIN_ROOT / node).is_dir()
    nodes = walk.lab.get_json("septumnodes")["items"]
    assert sorted(n["metadata"]["name"] for n in nodes) == walk.nodes


def test_both_ships_land_before_any_policy(walk: Walk) -> None:
    starwars.check_landings(walk.lab, {"tiefighter": True, "xwing": True})


def test_the_policy_lets_the_empire_land_and_the_xwing_times_out(walk: Walk) -> None:
    policy = starwars.apply_policy(walk.lab)
    starwars.wait_enforced(walk.lab, policy, walk.nodes)
    landings = {r.ship: r for r in starwars.check_landings(
        walk.lab, {"tiefighter": True, "xwing": False})}  # fmt: skip
    assert "Ship landed" in landings["tiefighter"].output
    # Dropped, not refused: curl gives up at its deadline (exit 28), no RST ever came back.
    assert "timed out" in landings["xwing"].output.lower(), landings["xwing"].output


def test_hubble_through_the_relay_shows_both_verdicts_with_pods_and_the_policy(walk: Walk) -> None:
    def both_verdicts() -> list[flows.FlowLine]:
        lines = walk.deathstar_flows()
        verdicts = {(line.source, line.verdict) for line in lines}
        wanted = {("default/tiefighter", "FORWARDED"), ("default/xwing", "DROPPED")}
        return lines if wanted <= verdicts else []

    lines = until("FORWARDED and DROPPED flows through the relay", both_verdicts, 30)
    forwarded = [x for x in lines if x.source == "default/tiefighter" and x.verdict == "FORWARDED"]
    dropped = [x for x in lines if x.source == "default/xwing" and x.verdict == "DROPPED"]
    assert all(x.destination.startswith("default/deathstar-") and x.port == 80 for x in forwarded)
    assert any("SeptumNetworkPolicy/default/rule1" in x.policies for x in forwarded), forwarded
    assert all(x.drop_reason == "POLICY_DENIED" for x in dropped), dropped
    # Both nodes' flows reach the relay's one stream (the deathstar has a pod on each node).
    hosts = walk.lab.get_json("pods", "-n", "default", "-l", "class=deathstar")["items"]
    assert len({p["spec"]["nodeName"] for p in hosts}) >= 1
    # `septum observe` through the same relay sees the same verdicts.
    mine = flows.septum_observe(walk.relay(), *flows.deathstar_filters(walk.since))
    mine_lines = {(f.source, f.verdict) for f in map(flows.FlowLine.of, mine)}
    assert {("default/tiefighter", "FORWARDED"), ("default/xwing", "DROPPED")} <= mine_lines


def _hubble_nodes(walk: Walk) -> dict[str, str]:
    out = subprocess.run(
        [str(walk.hubble), "list", "nodes", "--server", walk.relay(), "-o", "json"],
        capture_output=True, text=True, timeout=30, check=True,
        env={"HOME": "/nonexistent", "PATH": "/usr/bin:/bin"},
    ).stdout  # fmt: skip
    return {n["name"]: n["state"] for n in json.loads(out)}


def test_the_relay_lists_every_node_over_mutual_tls(walk: Walk) -> None:
    def all_connected() -> dict[str, str] | None:
        states = _hubble_nodes(walk)
        return states if set(states.values()) == {"NODE_CONNECTED"} else None

    states = until("every node connected", all_connected, 30)
    assert states is not None and sorted(states) == walk.nodes
    # The agents refuse a client without the cluster CA's certificate.
    agent_ip = walk.release.agent_pods()[walk.nodes[0]]["status"]["hostIP"]
    plain = subprocess.run(
        [str(walk.hubble), "status", "--server", f"{agent_ip}:4244", "--timeout", "3s"],
        capture_output=True, text=True, timeout=30, check=False,
        env={"HOME": "/nonexistent", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert plain.returncode != 0


def test_an_invalid_edit_is_marked_invalid_and_the_last_valid_version_stays_enforced(
    walk: Walk,
) -> None:
    valid = walk.lab.get_json("snp", "-n", "default", "rule1")["spec"]["ingress"]
    broken = json.loads(json.dumps(valid))
    broken[0]["toPorts"][0]["rules"] = {"http": [{"method": "POST", "path": "("}]}

    def edit(ingress: object) -> None:  # as `kubectl edit` would: the spec changes in place
        patch = json.dumps({"spec": {"ingress": ingress}})
        walk.lab.kubectl("patch", "snp", "-n", "default", "rule1", "--type=merge", "-p", patch)

    edit(broken)  # the schema lets a bad regular expression by; the engine does not

    def invalid_condition() -> dict[str, str] | None:
        current = walk.lab.get_json("snp", "-n", "default", "rule1")
        for condition in current.get("status", {}).get("conditions", []):
            if condition["type"] == "Valid" and condition["status"] == "False":
                return dict(condition)
        return None

    condition = until("rule1 marked Invalid", invalid_condition, 30)
    assert condition is not None and "path" in condition["message"], condition
    events = walk.lab.get_json("events", "-n", "default", "--field-selector",
                               "involvedObject.name=rule1")["items"]  # fmt: skip
    assert any(e["type"] == "Warning" for e in events), events
    starwars.check_landings(walk.lab, {"tiefighter": True, "xwing": False})
    edit(valid)
    until("rule1 valid again", lambda: invalid_condition() is None, 30)


def test_a_clusterwide_policy_is_validated_and_reported_by_every_node(walk: Walk) -> None:
    policy = {
        "apiVersion": "septum.io/v2",
        "kind": "SeptumClusterwideNetworkPolicy",
        "metadata": {"name": "septum-e2e-nothing"},
        "spec": {
            "endpointSelector": {"matchLabels": {"septum-e2e/selects": "nothing"}},
            "ingress": [{"fromEntities": ["cluster"]}],
        },
    }
    walk.lab.kubectl("apply", "-f", "-", input_text=json.dumps(policy))
    try:

        def reported() -> bool:
            status = walk.lab.get_json("scnp", "septum-e2e-nothing").get("status", {})
            valid = {c["type"]: c["status"] for c in status.get("conditions", [])}
            nodes = status.get("nodes") or {}
            return valid.get("Valid") == "True" and all(
                nodes.get(n, {}).get("enforcing") for n in walk.nodes
            )

        until("the clusterwide policy valid and enforced on every node", reported, 30)
    finally:
        walk.lab.kubectl("delete", "scnp", "septum-e2e-nothing", "--ignore-not-found")


def test_the_relay_survives_an_agent_restart(walk: Walk) -> None:
    node = walk.nodes[-1]
    old = walk.release.agent_pods()[node]["metadata"]["name"]
    walk.lab.kubectl("delete", "pod", "-n", walk.release.namespace, old, "--wait=true")
    walk.release.wait_rolled_out(120)
    assert walk.release.agent_pods()[node]["metadata"]["name"] != old
    until("the restarted node connected again", lambda: _hubble_nodes(walk).get(node)
          == "NODE_CONNECTED", 60)  # fmt: skip
    # Enforcement held through the restart and flows keep coming through the relay.
    restarted = datetime.now(UTC).isoformat()
    starwars.check_landings(walk.lab, {"tiefighter": True, "xwing": False})
    until(
        "new flows through the relay after the restart",
        lambda: flows.hubble_observe(walk.hubble, walk.relay(), "--since", restarted,
                                     "--from-pod", "default/xwing", "--verdict", "DROPPED"),
        30,
    )  # fmt: skip


STREAM = r"""
import http.client, json, sys, threading, time
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
conn = http.client.HTTPConnection("deathstar.default.svc.cluster.local", 80, timeout=5)
ok, error, ports = 0, None, set()
while not stop.is_set():
    try:
        conn.request("POST", "/v1/request-landing")
        response = conn.getresponse()
        response.read()
        ports.add(conn.sock.getsockname()[1])
        if response.status != 200:
            error = f"status {response.status}"
            break
        ok += 1
    except Exception as err:
        error = repr(err)
        break
    time.sleep(0.1)
print(json.dumps({"ok": ok, "error": error, "connections": len(ports)}))
"""

PROBE = r"""
import json, socket, sys, threading, time
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
tries, connected = 0, 0
while not stop.is_set():
    tries += 1
    try:
        socket.create_connection(("deathstar.default.svc.cluster.local", 80), timeout=1).close()
        connected += 1
    except OSError:
        pass
    time.sleep(0.2)
print(json.dumps({"tries": tries, "connected": connected}))
"""


def _in_pod(walk: Walk, pod: str, script: str) -> subprocess.Popen[str]:
    argv = [str(walk.lab.binaries.kubectl), f"--kubeconfig={walk.lab.kubeconfig}", "exec", "-i",
            "-n", "default", pod, "--", "python3", "-c", script]  # fmt: skip
    return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip


def _finish(proc: subprocess.Popen[str]) -> dict[str, object]:
    out, err = proc.communicate("", timeout=60)
    assert proc.returncode == 0, err
    return dict(json.loads(out.strip().splitlines()[-1]))


def test_helm_upgrade_rolls_the_agents_without_a_window(walk: Walk) -> None:
    before = {n: p["metadata"]["uid"] for n, p in walk.release.agent_pods().items()}
    stream = _in_pod(walk, "tiefighter", STREAM)
    probe = _in_pod(walk, "xwing", PROBE)
    try:
        time.sleep(2)  # both under way before the first agent stops
        walk.release.upgrade({"agent.podAnnotations.septum-test/rolled": f"t{time.time_ns()}"})
        time.sleep(2)  # and both still running after the last agent is back
    finally:
        stream_result = _finish(stream)
        probe_result = _finish(probe)
    after = {n: p["metadata"]["uid"] for n, p in walk.release.agent_pods().items()}
    assert all(after[n] != before[n] for n in walk.nodes), "every agent was replaced"
    assert stream_result["error"] is None, stream_result
    assert stream_result["connections"] == 1, stream_result  # one connection, never reset
    assert int(stream_result["ok"]) > 20, stream_result  # type: ignore[call-overload]
    assert probe_result["connected"] == 0, probe_result  # never one successful connection
    assert int(probe_result["tries"]) > 10, probe_result  # type: ignore[call-overload]


def _last_agent_log(lab: Lab, node: str, lines: int = 40) -> str:
    """The tail of the node's most recent agent container log (the lab kubelet keeps them
    under the node's pods/<uid>/logs/<container>/ until it restarts)."""
    logs = sorted(
        (lab.state.node_dir(node) / "pods").glob("*/logs/agent/*.log"),
        key=lambda p: p.stat().st_mtime,
    )
    if not logs:
        return "(no agent log)"
    tail = logs[-1].read_text(errors="replace").splitlines()[-lines:]
    return f"{logs[-1]}:\n" + "\n".join(tail)


def test_helm_uninstall_leaves_nothing_behind(walk: Walk) -> None:
    lab = walk.lab
    walk.release.uninstall()
    assert not walk.release.installed()
    until("no Septum process left", lambda: not septum_processes(), 30)
    for node in walk.nodes:
        cni = lab.state.node_dir(node) / "cni"
        why = f"{node}; its agent's last words: {_last_agent_log(lab, node)}"
        assert not (cni / "net.d" / "05-septum.conflist").exists(), why
        assert not (cni / "bin" / "septum-cni").exists(), why
        assert not (PIN_ROOT / node).exists(), why
        assert not (Path("/run/septum") / node).exists(), why
        assert not (Path("/var/lib/septum") / node).exists(), why
    for kind in ("septumendpoints", "septumnodes", "septumidentities"):
        assert lab.get_json(kind, "-A")["items"] == [], kind
    ns = walk.release.namespace
    for kind, name in [
        ("secret", "septum-ca"),
        ("secret", "septum-agent-tls"),
        ("service", "septum-relay"),
        ("service", "septum-peer"),
        ("serviceaccount", "septum-agent"),
        ("lease", "septum-operator"),
    ]:
        got = lab.kubectl("get", kind, "-n", ns, name, "--ignore-not-found", "-o", "name")
        assert got.stdout.strip() == "", f"{kind}/{name} left"  # fmt: skip
    for kind in ("clusterrole", "clusterrolebinding"):
        got = lab.kubectl("get", kind, "septum-agent", "septum-operator", "--ignore-not-found")
        assert got.stdout.strip() == "", kind
    # No program is left in the path: the xwing lands again, the policy notwithstanding.
    starwars.check_landings(lab, {"tiefighter": True, "xwing": True})


# Calls the lifecycle above cannot make, each with the reason; every other rule must be used.
# (Identity garbage collection deletes after --identity-gc-interval, 5m: the uninstall makes
# the same call, so nothing is exempt for it.)
RARELY_USED: dict[str, set[tuple[str, str, str]]] = {
    # After a 409 on create, the operator reads the identity that took the number (another
    # replica's, or one its cache had not seen yet): a race one leader never makes.
    "septum-operator": {("septum.io", "septumidentities", "get")},
    "septum-agent": set(),
    "septum-uninstall": set(),  # the pre-delete hook
}


def _granted(objs: list[dict[str, Any]], account: str) -> set[tuple[str, str, str]]:
    """(group, resource[/subresource], verb) the chart's Roles bound to `account` allow."""
    bound = {
        (b["roleRef"]["kind"], b["roleRef"]["name"])
        for b in objs
        if b["kind"] in ("ClusterRoleBinding", "RoleBinding")
        and any(subject["name"] == account for subject in b["subjects"])
    }
    assert bound, f"no binding for {account}"
    return {
        (group, resource, verb)
        for doc in objs
        if (doc["kind"], doc["metadata"]["name"]) in bound
        for rule in doc.get("rules") or []
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def test_rbac_rules_are_exactly_the_calls_the_code_made(walk: Walk) -> None:
    """Run last: the API server's audit log of the whole lifecycle above, install to uninstall,
    against the chart's rules. A call refused (403) is a missing rule; a rule never used is one
    too many."""
    assert walk.audit_from is not None
    rendered = walk.release.helm("template", walk.release.name, str(walk.release.chart),
                                 "-n", walk.release.namespace)  # fmt: skip
    objs = [d for d in yaml.safe_load_all(rendered) if d]
    for account in ("septum-agent", "septum-operator", "septum-uninstall"):
        user = audit.service_account_user(walk.release.namespace, account)
        calls = audit.calls(walk.lab.state.audit_log, user, since=walk.audit_from)
        resource_calls = {c for c in calls if not c.resource.startswith("/")}
        refused = sorted(c for c in resource_calls if c.code == 403)
        assert not refused, f"{account}: calls no rule allows: {refused}"
        used = {
            (c.api_group, f"{c.resource}/{c.subresource}" if c.subresource else c.resource, c.verb)
            for c in resource_calls
        }
        granted = _granted(objs, account)
        # SelfSubjectReview and the like come from Kubernetes' default roles, not the chart.
        extra = {u for u in used - granted if u[0] != "authorization.k8s.io"}
        assert not extra, f"{account}: calls outside the chart's rules: {sorted(extra)}"
        unused = granted - used - RARELY_USED[account]
        assert not unused, f"{account}: rules no call used: {sorted(unused)}"
