"""End to end on the session's lab: workloads, networking, Services, DNS, logs, exec, restarts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from septum.lab.lab import Lab
from septum.lab.pytest_plugin import wait_for

from .e2e_workloads import NS, manifests, pod_manifest

pytestmark = [pytest.mark.privileged, pytest.mark.lab]

SEPTUM = str(Path(sys.executable).parent / "septum")


@pytest.fixture(scope="module")
def workloads(lab: Lab) -> Iterator[Lab]:
    lab.kubectl("apply", "-f", "-", input_text=yaml.safe_dump_all(manifests()))
    try:
        yield lab
    finally:
        lab.kubectl("delete", "namespace", NS, "--wait=false", check=False)


def _pods(lab: Lab, selector: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = lab.get_json("pods", "-n", NS, "-l", selector)["items"]
    return items


def _pod_json(lab: Lab, name: str) -> dict[str, Any]:
    pod: dict[str, Any] = lab.get_json("pod", "-n", NS, name)
    return pod


def _running_with_ip(pod: dict[str, Any]) -> bool:
    status = pod.get("status", {})
    return status.get("phase") == "Running" and bool(status.get("podIP"))


def _ready(pod: dict[str, Any]) -> bool:
    return any(
        c["type"] == "Ready" and c["status"] == "True"
        for c in pod.get("status", {}).get("conditions", [])
    )


def _lab_exec(pod: str, *cmd: str, timeout_s: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SEPTUM, "lab", "exec", f"{NS}/{pod}", "--", *cmd],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


# The client pod's toolbox image runs the host's tools; python3 is always there (curl may not be).
_HTTP = """
import sys, urllib.request
req = urllib.request.Request(sys.argv[1], method=sys.argv[2])
with urllib.request.urlopen(req, timeout=3) as resp:
    sys.stdout.write(resp.read().decode())
"""


def _http(pod: str, url: str, method: str = "GET") -> str:
    out = _lab_exec(pod, "python3", "-c", _HTTP, url, method)
    return out.stdout if out.returncode == 0 else f"request failed ({out.returncode}): {out.stderr}"


def _wait_ready(lab: Lab, name: str) -> dict[str, Any]:
    pod = wait_for(f"pod {name} Ready", lambda: p if _ready(p := _pod_json(lab, name)) else None)
    assert isinstance(pod, dict)
    return pod


def test_nodes_are_ready_with_pod_cidrs_and_leases(lab: Lab) -> None:
    nodes = lab.get_json("nodes")["items"]
    assert sorted(n["metadata"]["name"] for n in nodes) == ["slab-node1", "slab-node2"]
    for node in nodes:
        assert node["spec"]["podCIDR"].startswith("10.214.")
        assert any(
            c["type"] == "Ready" and c["status"] == "True" for c in node["status"]["conditions"]
        )
    leases = lab.get_json("leases", "-n", "kube-node-lease")["items"]
    assert {lease["metadata"]["name"] for lease in leases} >= {"slab-node1", "slab-node2"}


def test_kubectl_version_reports_the_real_release(lab: Lab) -> None:
    out = json.loads(lab.kubectl("version", "-o", "json").stdout)
    assert out["serverVersion"]["gitVersion"] == lab.binaries.kubernetes_version
    assert out["clientVersion"]["gitVersion"] == lab.binaries.kubernetes_version


def test_deployment_and_daemonset_run_on_both_nodes(workloads: Lab) -> None:
    def web_spread() -> set[str] | None:
        pods = _pods(workloads, "app=web")
        if len(pods) == 4 and all(_running_with_ip(p) for p in pods):
            return {p["spec"]["nodeName"] for p in pods}
        return None

    assert wait_for("4 web pods Running with IPs", web_spread) == {"slab-node1", "slab-node2"}

    def idle_spread() -> set[str] | None:
        pods = _pods(workloads, "app=idle")
        if len(pods) == 2 and all(_running_with_ip(p) for p in pods):
            return {p["spec"]["nodeName"] for p in pods}
        return None

    assert wait_for("DaemonSet pods on both nodes", idle_spread) == {"slab-node1", "slab-node2"}


def test_pod_to_pod_across_nodes(workloads: Lab) -> None:
    _wait_ready(workloads, "client")

    def remote_web() -> dict[str, Any] | None:
        pods = [
            p
            for p in _pods(workloads, "app=web")
            if p["spec"].get("nodeName") == "slab-node2" and _ready(p)
        ]
        return pods[0] if pods else None

    target = wait_for("a ready web pod on slab-node2", remote_web)
    assert isinstance(target, dict)
    ip, name = target["status"]["podIP"], target["metadata"]["name"]
    # The answer is the remote pod's own hostname: the packet really reached it.
    wait_for(
        f"{name} answering the client across nodes",
        lambda: _http("client", f"http://{ip}:8080/hostname") == name,
    )


def test_service_by_cluster_ip_and_dns_names(workloads: Lab) -> None:
    _wait_ready(workloads, "client")
    svc = workloads.get_json("service", "-n", NS, "web")
    names = lambda: {p["metadata"]["name"] for p in _pods(workloads, "app=web")}  # noqa: E731
    for url in (
        f"http://{svc['spec']['clusterIP']}/hostname",
        f"http://web.{NS}.svc.cluster.local/hostname",
        f"http://web.{NS}/hostname",
    ):
        wait_for(f"a web pod answering {url}", lambda u=url: _http("client", u) in names())


def test_deathstar_lands_ships(workloads: Lab) -> None:
    _wait_ready(workloads, "client")
    _wait_ready(workloads, "deathstar")
    wait_for(
        "the deathstar to land a ship",
        lambda: (
            _http("client", f"http://deathstar.{NS}/v1/request-landing", "POST") == "Ship landed\n"
        ),
    )


def test_lab_exec_passes_output_and_exit_code(workloads: Lab) -> None:
    _wait_ready(workloads, "client")
    out = _lab_exec("client", "sh", "-c", "echo inside; ip -4 -o addr show eth0; exit 7")
    assert out.returncode == 7
    assert out.stdout.startswith("inside\n")
    assert _pod_json(workloads, "client")["status"]["podIP"] in out.stdout


def test_lab_exec_errors_name_the_problem(workloads: Lab) -> None:
    out = _lab_exec("no-such-pod", "true")
    assert out.returncode == 1
    assert out.stderr.startswith("septum lab: pod slab-e2e/no-such-pod")
    bad = subprocess.run(
        [SEPTUM, "lab", "exec", "client", "--", "true"], capture_output=True, text=True, check=False
    )
    assert bad.returncode == 1 and "NAMESPACE/NAME" in bad.stderr


def test_kubectl_logs_and_follow(workloads: Lab) -> None:
    pod = wait_for(
        "a Running web pod",
        lambda: next((p for p in _pods(workloads, "app=web") if _running_with_ip(p)), None),
    )
    assert isinstance(pod, dict)
    wait_for(
        "netexec's start-up line in kubectl logs",
        lambda: (
            "Started HTTP server"
            in workloads.kubectl("logs", "-n", NS, pod["metadata"]["name"]).stdout
        ),
    )
    wait_for("ticker Running", lambda: _running_with_ip(_pod_json(workloads, "ticker")))
    follow = subprocess.Popen(
        [
            str(workloads.binaries.kubectl),
            f"--kubeconfig={workloads.kubeconfig}",
            "logs",
            "-f",
            "--tail=1",
            "-n",
            NS,
            "ticker",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert follow.stdout is not None
        seen: list[str] = []
        deadline = time.monotonic() + 20
        while len(seen) < 4 and time.monotonic() < deadline:
            seen.append(follow.stdout.readline())
        numbers = [int(line.split()[1]) for line in seen if line.startswith("tick ")]
        assert len(numbers) == 4 and numbers == sorted(numbers), seen
    finally:
        follow.kill()
        follow.wait()
        if follow.stdout is not None:
            follow.stdout.close()


def test_crashing_container_restarts_with_backoff(workloads: Lab) -> None:
    def restarted_twice() -> dict[str, Any] | None:
        status = _pod_json(workloads, "crasher")["status"]
        cs = status.get("containerStatuses", [{}])[0]
        return cs if cs.get("restartCount", 0) >= 2 else None

    cs = wait_for("crasher to restart twice", restarted_twice, timeout_s=120)
    assert isinstance(cs, dict)
    assert cs["lastState"]["terminated"]["exitCode"] == 3

    def backoff_events() -> list[str]:
        events = workloads.get_json(
            "events", "-n", NS, "--field-selector=involvedObject.name=crasher"
        )["items"]
        return [e["message"] for e in events if e["reason"] == "BackOff"]

    assert (
        "Back-off restarting failed container crasher"
        in wait_for("a BackOff event", backoff_events)[0]
    )
    previous = workloads.kubectl("logs", "--previous", "-n", NS, "crasher").stdout
    assert previous.startswith("run-")
    wait_for(
        "CrashLoopBackOff between runs",
        lambda: (
            _pod_json(workloads, "crasher")["status"]["containerStatuses"][0]["state"]
            .get("waiting", {})
            .get("reason")
            == "CrashLoopBackOff"
        ),
        timeout_s=60,
    )


def test_failing_readiness_probe_removes_the_endpoint(workloads: Lab, tmp_path: Path) -> None:
    # The exec probe runs inside the container, whose /tmp is the host's: the test flips
    # readiness by creating and removing a file, so no timing window is involved.
    flag = Path("/tmp") / f"slab-e2e-ready-{uuid.uuid4().hex}"
    pod = pod_manifest(
        "flaky",
        "busybox",
        ["sh", "-c", "python3 -m http.server 8000"],
        container={
            "readinessProbe": {
                "exec": {"command": ["test", "-e", str(flag)]},
                "periodSeconds": 1,
                "failureThreshold": 1,
            }
        },
    )
    workloads.kubectl("apply", "-f", "-", input_text=json.dumps(pod))

    def endpoint_ready() -> bool | None:
        slices = workloads.get_json(
            "endpointslices", "-n", NS, "-l", "kubernetes.io/service-name=flaky"
        )["items"]
        states = [
            ep.get("conditions", {}).get("ready")
            for s in slices
            for ep in (s.get("endpoints") or [])
        ]
        return states[0] if states else None

    try:
        wait_for("flaky Running", lambda: _running_with_ip(_pod_json(workloads, "flaky")))
        assert endpoint_ready() is not True
        flag.touch()
        wait_for("flaky's endpoint to be ready", lambda: endpoint_ready() is True)
        _wait_ready(workloads, "client")
        assert "Directory listing" in _http("client", "http://flaky/")
        flag.unlink()
        wait_for("flaky's endpoint to turn not-ready", lambda: endpoint_ready() is False)
        assert not _ready(_pod_json(workloads, "flaky"))
    finally:
        flag.unlink(missing_ok=True)


def test_unknown_image_gives_err_image_pull(workloads: Lab) -> None:
    def waiting() -> dict[str, Any] | None:
        statuses = _pod_json(workloads, "ghost").get("status", {}).get("containerStatuses", [])
        return statuses[0]["state"].get("waiting") if statuses else None

    state = wait_for("ghost to report its image pull", waiting)
    assert isinstance(state, dict)
    assert state["reason"] == "ErrImagePull"
    assert "registry.k8s.io/e2e-test-images/agnhost" in state["message"]
    assert _pod_json(workloads, "ghost")["status"]["phase"] == "Pending"


def test_kubectl_exec(workloads: Lab) -> None:
    _wait_ready(workloads, "client")
    kubectl = [str(workloads.binaries.kubectl), f"--kubeconfig={workloads.kubeconfig}"]
    out = subprocess.run(
        [*kubectl, "exec", "-n", NS, "client", "--", "sh", "-c", "hostname; exit 4"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert out.returncode == 4, out.stderr
    assert out.stdout == "client\n"
    echoed = subprocess.run(
        [*kubectl, "exec", "-i", "-n", NS, "client", "--", "cat"],
        input="through stdin\n",
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert echoed.stdout == "through stdin\n", echoed.stderr


def test_septum_image_gets_command_env_configmaps_and_secrets(workloads: Lab) -> None:
    wait_for(
        "the septum pod to succeed",
        lambda: _pod_json(workloads, "septum")["status"].get("phase") == "Succeeded",
    )
    logs = workloads.kubectl("logs", "-n", NS, "septum").stdout.split("\n")
    assert logs[:4] == ["hello from a ConfigMap", "s3cret", "s3cret True 10.96.0.1", "80 tcp"]


def test_host_network_pod_runs_in_the_node_namespace(workloads: Lab) -> None:
    pod = _wait_ready(workloads, "hostnet")
    assert pod["status"]["podIP"] == pod["status"]["hostIP"] == "10.213.0.12"
    out = _lab_exec("hostnet", "ip", "-4", "-o", "addr", "show", "eth0")
    assert "10.213.0.12/24" in out.stdout


def test_outside_peer_is_reachable_from_pods(workloads: Lab, outside_peer) -> None:  # type: ignore[no-untyped-def]
    peer = outside_peer("203.0.113.10")
    server = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            peer.netns,
            "python3",
            "-m",
            "http.server",
            "--bind",
            peer.address,
            "8000",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_ready(workloads, "client")
        wait_for(
            "the peer's directory listing",
            lambda: "Directory listing" in _http("client", "http://203.0.113.10:8000/"),
        )
    finally:
        server.kill()
        server.wait()


def test_failing_liveness_probe_restarts_the_container(workloads: Lab) -> None:
    def restarted() -> dict[str, Any] | None:
        statuses = _pod_json(workloads, "unlively").get("status", {}).get("containerStatuses")
        return statuses[0] if statuses and statuses[0].get("restartCount", 0) >= 1 else None

    cs = wait_for("unlively to be restarted by its liveness probe", restarted, timeout_s=60)
    assert isinstance(cs, dict)
    assert cs["lastState"]["terminated"]["exitCode"] == 128 + 15  # SIGTERM from the kubelet


def test_the_lab_is_sealed(workloads: Lab) -> None:
    for node in workloads.nodes:
        routes = subprocess.run(
            ["ip", "netns", "exec", node.netns, "ip", "route", "show", "default"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert routes.stdout == "", f"{node.netns} has a default route: {routes.stdout}"
    _wait_ready(workloads, "client")
    # A pod's packet to anything outside the lab dies at its node (no route), fast.
    out = _http("client", "http://192.0.2.1/")
    assert out.startswith("request failed") and "unreachable" in out.lower(), out


def test_supervisor_restarts_a_crashed_control_plane_process(lab: Lab) -> None:
    from septum.lab import lab as lab_mod
    from septum.lab import procs

    before = next(p for p in procs.read(lab.state.run) if p.name == "kube-scheduler")
    os.kill(before.pid, signal.SIGKILL)

    def restarted() -> bool:
        now = next(p for p in procs.read(lab.state.run) if p.name == "kube-scheduler")
        return now.pid != before.pid and procs.alive(now)

    wait_for("the supervisor to restart kube-scheduler", restarted, timeout_s=30)
    assert lab_mod.status()["restarts"]["kube-scheduler"] >= 1


def test_kubectl_exec_with_a_terminal(workloads: Lab) -> None:
    _wait_ready(workloads, "client")
    kubectl = f"{workloads.binaries.kubectl} --kubeconfig={workloads.kubeconfig}"
    # script(1) gives kubectl the terminal it wants for -it.
    out = subprocess.run(
        ["script", "-qec", f"{kubectl} exec -it -n {NS} client -- sh", "/dev/null"],
        input="tty; echo $((6*7)); exit 5\n",
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert out.returncode == 5, out.stdout + out.stderr
    lines = [line.strip() for line in out.stdout.splitlines()]
    assert any("/dev/pts/" in line for line in lines), lines
    assert "42" in lines


def test_init_container_runs_first_and_shares_an_empty_dir(workloads: Lab) -> None:
    pod = _wait_ready(workloads, "inited")
    init = pod["status"]["initContainerStatuses"][0]
    assert init["state"]["terminated"]["exitCode"] == 0
    wait_for(
        "the main container's output",
        lambda: workloads.kubectl("logs", "-n", NS, "inited").stdout == "prepared by init\n",
    )
    assert workloads.kubectl("logs", "-n", NS, "inited", "-c", "prepare").returncode == 0
