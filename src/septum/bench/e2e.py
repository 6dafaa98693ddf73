"""`septum bench e2e`: from ``kubectl apply`` of a policy to every node enforcing it.

On the lab (the running one, else one started for the run and taken down after): the CRDs,
the operator and one agent per node, and ``--pods`` pods in a namespace of their own (per
node a Deployment of idle pods, two agnhost servers and two clients). One NetworkPolicy
selects the servers and admits the clients on a port; each apply moves that port between
the servers' port (allow) and another (deny). Timing starts when ``kubectl apply`` is
launched. Probers, one long-lived process in each client's network namespace, connect to
every server (same node and across nodes) from that moment, one new connection per pair
every ``--probe-interval-ms``, until each pair has shown the new verdict on ``HOLD``
connections in a row; a pair's time is the launch of the first of them, an apply's time the
largest over pairs (so over nodes). Both transitions are timed by their first packet:
deny→allow by the first SYN let through, allow→deny by the first SYN dropped (a connection
counts as dropped when it has no answer after ``--probe-timeout-ms``; it is timed from its
launch, so the timeout delays the result but does not enter the figure).

Reference in the same run: the same apply seen by a ``kubectl get --watch`` started before
the loop, the API server's watch fan-out that the agents also wait for.
Memory: RSS of the agents (largest) and of the operator, sampled every half second.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

TARGETS = {"apply_to_enforce_p99_ms": 1000.0, "agent_rss_mb": 150.0, "operator_rss_mb": 200.0}
KEYS = (  # the --json object: these, and everything else under "details"
    "apply_to_enforce_p50_ms",
    "apply_to_enforce_p99_ms",
    "agent_rss_mb",
    "operator_rss_mb",
)
AGNHOST = "registry.k8s.io/e2e-test-images/agnhost:2.53"
PAUSE = "registry.k8s.io/pause:3.10"
SERVER_PORT = 8080
OTHER_PORT = 8081  # what the "deny" version admits instead: nothing listens there over TCP
SERVERS_PER_NODE = 2
CLIENTS_PER_NODE = 2
HOLD = 3  # connections in a row with the new verdict before a pair counts as switched
POLICY = "e2e-probe"
TIMELINE_STEP_S = 5.0  # details.rss_mb_timeline: [seconds, largest agent MB, operator MB]

# Runs in a client pod's network namespace (python -I -c). argv: interval_ms timeout_ms hold
# targets ("ip:port,..."). Each stdin line "SEQ allow|deny LIMIT_S" starts one measurement;
# the answer is one JSON line. Times are CLOCK_MONOTONIC, shared by every process here.
PROBER = r"""
import errno, json, selectors, socket, struct, sys, time
interval, timeout, hold = float(sys.argv[1]) / 1e3, float(sys.argv[2]) / 1e3, int(sys.argv[3])
targets = [t for t in sys.argv[4].split(",") if t]
addr = {t: (t.rsplit(":", 1)[0], int(t.rsplit(":", 1)[1])) for t in targets}
linger0 = struct.pack("ii", 1, 0)
sel = selectors.DefaultSelector()
print("ready", flush=True)
for line in sys.stdin:
    seq, want, limit = line.split()
    allow, end = want == "allow", time.monotonic() + float(limit)
    order = {t: [] for t in targets}   # [launched, outcome or None] in launch order
    run = {t: [0, None] for t in targets}
    done, probes, flips, last = {}, 0, 0, {}
    pending = {}
    def settle(t):
        global flips
        q = order[t]
        while q and q[0][1] is not None and t not in done:
            launched, ok = q.pop(0)
            last[t] = ok
            if ok == allow:
                if run[t][0] == 0: run[t][1] = launched
                run[t][0] += 1
                if run[t][0] >= hold: done[t] = run[t][1]
            else:
                if run[t][0]: flips += 1
                run[t] = [0, None]
    def finish(s, ok):
        t, entry = pending.pop(s)
        try: sel.unregister(s)
        except (KeyError, ValueError): pass
        s.close(); entry[1] = ok; settle(t)
    next_launch = time.monotonic()
    while len(done) < len(targets):
        now = time.monotonic()
        if now >= end: break
        if now >= next_launch:
            for t in targets:
                if t in done: continue
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.setblocking(False)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger0)
                entry = [time.monotonic(), None]; order[t].append(entry); probes += 1
                pending[s] = (t, entry)
                rc = s.connect_ex(addr[t])
                if rc == errno.EINPROGRESS: sel.register(s, selectors.EVENT_WRITE)
                else: finish(s, rc == 0)
            next_launch = max(next_launch + interval, now)
        for key, _ in sel.select(0):  # answers first: a late wake-up is not a drop
            s = key.fileobj
            if s in pending: finish(s, s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0)
        now = time.monotonic()
        for s, (t, entry) in list(pending.items()):
            if now - entry[0] >= timeout: finish(s, False)
        wake = next_launch - now
        if pending: wake = min(wake, min(e[0] for _, e in pending.values()) + timeout - now)
        for key, _ in sel.select(max(0.0, wake)):
            s = key.fileobj
            if s in pending: finish(s, s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0)
    for s in list(pending): finish(s, False)
    print(json.dumps({"seq": int(seq), "done": done, "probes": probes, "flips": flips,
                      "last": last}), flush=True)
"""


class E2EError(Exception):
    """The benchmark could not run, or a verdict never held (the message says what was seen)."""


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))] if ordered else 0.0


# ---- the lab: reuse the running one, or start one and take it down after ----------------------


@contextlib.contextmanager
def _lab_session(nodes: int, progress: Any) -> Iterator[Any]:
    """The lab for the run, registered as a user of the shared lab as test sessions are."""
    from septum.lab import config
    from septum.lab import lab as lab_mod

    sessions = config.cache_dir() / "lab-sessions"
    sessions.mkdir(parents=True, exist_ok=True)
    mine = sessions / str(os.getpid())
    mine.touch()
    started = not lab_mod.is_running()
    try:
        if started:
            progress("no lab running: starting one (taken down at the end)")
        lab_mod.up(nodes, progress=progress)
        yield lab_mod.current()
    finally:
        mine.unlink(missing_ok=True)
        if started:
            others = [e for e in sessions.glob("*") if e.name.isdigit() and _pid_alive(int(e.name))]
            if others:
                # Test sessions joined: the last of them takes it down (the pytest plugin's rule).
                (sessions / "started-by-tests").touch()
            else:
                progress("taking the lab down")
                lab_mod.down()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ---- workloads ----------------------------------------------------------------------------


def _deployment(
    name: str, namespace: str, node: str, replicas: int, labels: dict[str, str], container: Any
) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "nodeSelector": {"kubernetes.io/hostname": node},
                    "containers": [container],
                },
            },
        },
    }


def _workloads(namespace: str, nodes: list[str], pods: int) -> list[dict[str, Any]]:
    idle = pods - len(nodes) * (SERVERS_PER_NODE + CLIENTS_PER_NODE)
    server = {
        "name": "srv",
        "image": AGNHOST,
        "args": ["netexec", f"--http-port={SERVER_PORT}"],
        "readinessProbe": {"tcpSocket": {"port": SERVER_PORT}, "periodSeconds": 1},
    }
    client = {"name": "c", "image": "busybox", "command": ["sleep", "infinity"]}
    out = []
    for i, node in enumerate(nodes):
        short = node.rsplit("-", 1)[-1]
        out.append(
            _deployment(
                f"srv-{short}",
                namespace,
                node,
                SERVERS_PER_NODE,
                {"app": "e2e-srv", "node": short},
                server,
            )
        )
        out.append(
            _deployment(
                f"cli-{short}",
                namespace,
                node,
                CLIENTS_PER_NODE,
                {"role": "e2e-client", "node": short},
                client,
            )
        )
        replicas = idle // len(nodes) + (1 if i < idle % len(nodes) else 0)
        if replicas:
            out.append(
                _deployment(
                    f"idle-{short}",
                    namespace,
                    node,
                    replicas,
                    {"app": "e2e-idle", "node": short},
                    {"name": "p", "image": PAUSE},
                )
            )
    return out


def _policy(namespace: str, allow: bool) -> dict[str, Any]:
    """Isolates the servers; admits the clients on the servers' port (allow) or another (deny)."""
    port = SERVER_PORT if allow else OTHER_PORT
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": POLICY, "namespace": namespace},
        "spec": {
            "podSelector": {"matchLabels": {"app": "e2e-srv"}},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [{"podSelector": {"matchLabels": {"role": "e2e-client"}}}],
                    "ports": [{"protocol": "TCP", "port": port}],
                }
            ],
        },
    }


def _ready(pod: dict[str, Any]) -> bool:
    status = pod.get("status", {})
    return (
        status.get("phase") == "Running"
        and bool(status.get("podIP"))
        and any(
            c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", [])
        )
    )


# ---- probing ------------------------------------------------------------------------------


@dataclass
class Prober:
    """One prober process in a client pod's network namespace."""

    client: str  # namespace/name
    node: str
    proc: subprocess.Popen[str]

    def start_measurement(self, seq: int, allow: bool, limit_s: float) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{seq} {'allow' if allow else 'deny'} {limit_s}\n")
        self.proc.stdin.flush()

    def result(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise E2EError(f"prober in {self.client} exited: {err[-2000:]}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


def _start_prober(
    client: dict[str, Any], targets: list[str], interval_ms: float, timeout_ms: float
) -> Prober:
    from septum.lab import config

    netns = config.pod_netns(client["metadata"]["uid"])
    argv = [
        "ip", "netns", "exec", netns, sys.executable, "-I", "-c", PROBER,
        str(interval_ms), str(timeout_ms), str(HOLD), ",".join(targets),
    ]  # fmt: skip
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    ref = f"{client['metadata']['namespace']}/{client['metadata']['name']}"
    prober = Prober(ref, client["spec"]["nodeName"], proc)
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        prober.stop()
        raise E2EError(
            f"prober in {ref} did not start: {proc.stderr.read() if proc.stderr else ''}"
        )
    return prober


# ---- the reference: a kubectl watch on the policy -----------------------------------------


class PolicyWatch:
    """``kubectl get --watch`` on the policy: when each generation was seen, by arrival time."""

    def __init__(self, lab: Any, namespace: str) -> None:
        argv = [
            str(lab.binaries.kubectl), f"--kubeconfig={lab.kubeconfig}", "get", "networkpolicy",
            POLICY, "-n", namespace, "--watch", "-o", "jsonpath={.metadata.generation}{\"\\n\"}",
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            start_new_session=True,
        )  # fmt: skip
        self.seen: dict[int, float] = {}
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            now = time.monotonic()
            text = line.strip()
            if text.isdigit():
                with self._changed:
                    self.seen.setdefault(int(text), now)
                    self._changed.notify_all()

    def wait(self, generation: int, timeout_s: float) -> float | None:
        with self._changed:
            self._changed.wait_for(lambda: generation in self.seen, timeout_s)
            return self.seen.get(generation)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


# ---- memory -------------------------------------------------------------------------------


class RssSampler:
    """Samples the RSS of the agents (each with its children) and the operator."""

    def __init__(self, agents: dict[str, int], operator: int, every_s: float = 0.5) -> None:
        self.agents, self.operator, self.every_s = agents, operator, every_s
        self.peak_agent_mb: dict[str, float] = dict.fromkeys(agents, 0.0)
        self.peak_operator_mb = 0.0
        self.last_agent_mb: dict[str, float] = {}
        self.last_operator_mb = 0.0
        self.timeline: list[tuple[float, float, float]] = []  # (s, largest agent, operator) MB
        self._started = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _rss_mb(pid: int) -> float:
        import psutil  # type: ignore[import-untyped]

        try:
            proc = psutil.Process(pid)
            total = proc.memory_info().rss
            for child in proc.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    total += child.memory_info().rss
        except psutil.Error:
            return 0.0
        return float(total) / (1024 * 1024)

    def sample(self) -> None:
        for node, pid in self.agents.items():
            mb = self._rss_mb(pid)
            self.last_agent_mb[node] = mb
            self.peak_agent_mb[node] = max(self.peak_agent_mb[node], mb)
        self.last_operator_mb = self._rss_mb(self.operator)
        self.peak_operator_mb = max(self.peak_operator_mb, self.last_operator_mb)
        elapsed_s = time.monotonic() - self._started
        if not self.timeline or elapsed_s - self.timeline[-1][0] >= TIMELINE_STEP_S:
            agent_mb = max(self.last_agent_mb.values(), default=0.0)
            self.timeline.append((elapsed_s, agent_mb, self.last_operator_mb))

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.sample()

    def start(self) -> None:
        self.sample()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sample()


# ---- the run ------------------------------------------------------------------------------


@dataclass
class Apply:
    seq: int
    transition: str  # "deny→allow" or "allow→deny"
    enforce_ms: float | None  # None: not every pair switched before the limit
    apply_return_ms: float
    watch_seen_ms: float | None
    per_node_ms: dict[str, float] = field(default_factory=dict)
    probes: int = 0
    flips: int = 0
    unswitched: list[str] = field(default_factory=list)


def _measure(
    lab: Any,
    namespace: str,
    probers: list[Prober],
    server_node: dict[str, str],
    watch: PolicyWatch | None,
    seq: int,
    allow: bool,
    limit_s: float,
) -> Apply:
    t0 = time.monotonic()
    for prober in probers:
        prober.start_measurement(seq, allow, limit_s)
    out = lab.kubectl(
        "apply", "-f", "-", "-o", "jsonpath={.metadata.generation}",
        input_text=json.dumps(_policy(namespace, allow)),
    )  # fmt: skip
    returned = time.monotonic()
    generation = int(out.stdout.strip())
    results = [prober.result() for prober in probers]
    seen = None if watch is None else watch.wait(generation, 10)
    per_node: dict[str, float] = {}
    missing = []
    for prober, result in zip(probers, results, strict=True):
        for target in server_node:
            at = result["done"].get(target)
            if at is None:
                verdict = "allowed" if result["last"].get(target) else "denied"
                missing.append(f"{prober.client}→{target} ({server_node[target]}) last {verdict}")
                continue
            node = server_node[target]
            per_node[node] = max(per_node.get(node, 0.0), (at - t0) * 1000)
    return Apply(
        seq=seq,
        transition="deny→allow" if allow else "allow→deny",
        enforce_ms=None if missing else max(per_node.values()),
        apply_return_ms=(returned - t0) * 1000,
        watch_seen_ms=None if seen is None else (seen - t0) * 1000,
        per_node_ms=per_node,
        probes=sum(r["probes"] for r in results),
        flips=sum(r["flips"] for r in results),
        unswitched=missing,
    )


def run(
    pods: int,
    applies: int,
    interval_ms: float,
    timeout_ms: float,
    limit_s: float,
    keep_logs: bool,
    progress: Any,
) -> dict[str, Any]:
    from septum.bench import labagents

    nodes = 2
    if pods < nodes * (SERVERS_PER_NODE + CLIENTS_PER_NODE):
        raise E2EError(f"--pods {pods}: at least {nodes * 4} (2 servers and 2 clients per node)")
    namespace = f"e2e-{uuid.uuid4().hex[:6]}"
    tmp = Path(tempfile.mkdtemp(prefix="septum-bench-e2e-"))
    with contextlib.ExitStack() as stack:
        lab = stack.enter_context(_lab_session(nodes, progress))
        # One set of agents per lab: take turns with test sessions (released after cleanup).
        stack.enter_context(labagents.agents_lock(lab, on_wait=progress))
        busy = labagents.agent_already_running(lab)
        if busy is not None:  # a session that does not take the lock: wait for it to end
            progress(f"waiting for the agent on {busy} (another session's) to stop")
            labagents.poll_until(
                "no other agent on the lab",
                lambda: labagents.agent_already_running(lab) is None,
                1800,
                interval_s=2,
            )
        labagents.apply_crds(lab)
        # After the operator stops (callbacks run last-in first-out), so it cannot recreate them.
        stack.callback(_delete_identities, lab, namespace)
        operator = labagents.OperatorProcess(lab, tmp / "operator.log")
        stack.callback(operator.stop)
        operator.start()
        agents = [
            labagents.AgentProcess(node, lab, tmp / "state", tmp / f"agent-{node.name}.log")
            for node in lab.nodes
        ]
        for agent in agents:
            stack.callback(agent.remove_leftovers)
        for agent in agents:
            stack.callback(agent.stop)
        for agent in agents:
            agent.start()
        for agent in agents:
            agent.wait_ready(90)
        progress(f"operator and {len(agents)} agents ready; logs in {tmp}")
        assert operator.proc is not None
        sampler = RssSampler(
            {a.node.name: a.proc.pid for a in agents if a.proc is not None}, operator.proc.pid
        )
        sampler.start()
        stack.callback(sampler.stop)

        stack.callback(_delete_namespace, lab, namespace)
        lab.kubectl("create", "namespace", namespace)
        t_pods = time.monotonic()
        for obj in _workloads(namespace, [n.name for n in lab.nodes], pods):
            lab.kubectl("apply", "-f", "-", input_text=json.dumps(obj))

        progress(f"waiting for {pods} pods in {namespace}")
        items = _wait_pods_ready(lab, namespace, pods, 60 + pods * 2.0)
        pods_ready_s = time.monotonic() - t_pods
        servers = [p for p in items if p["metadata"]["labels"].get("app") == "e2e-srv"]
        clients = [p for p in items if p["metadata"]["labels"].get("role") == "e2e-client"]
        server_node = {
            f"{p['status']['podIP']}:{SERVER_PORT}": p["spec"]["nodeName"] for p in servers
        }
        probers: list[Prober] = []
        stack.callback(_stop_all, probers)
        for client in clients:
            probers.append(_start_prober(client, list(server_node), interval_ms, timeout_ms))

        # Before the loop: the servers isolated, the deny in force (not timed), the watch on.
        progress("first apply (deny, not timed)")
        warmup = _measure(lab, namespace, probers, server_node, None, 0, False, 60)
        if warmup.enforce_ms is None:
            raise E2EError("the first deny never held on every pair within 60 s")
        watch = PolicyWatch(lab, namespace)
        stack.callback(watch.stop)
        labagents.poll_until("the watch's first event", lambda: watch.seen, 10)

        results: list[Apply] = []
        for seq in range(1, applies + 1):
            allow = seq % 2 == 1
            result = _measure(lab, namespace, probers, server_node, watch, seq, allow, limit_s)
            results.append(result)
            shown = "timeout" if result.enforce_ms is None else f"{result.enforce_ms:.0f} ms"
            progress(f"apply {seq}/{applies} {result.transition}: {shown}")
        sampler.stop()
        pids = {
            "agents": [a.proc.pid for a in agents if a.proc is not None],
            "operator": operator.proc.pid,
            "probers": [p.proc.pid for p in probers],
        }
    summary = _summary(results, sampler, pods, pods_ready_s, interval_ms, timeout_ms)
    summary["details"]["pids"] = pids
    summary["details"]["namespace"] = namespace
    summary["details"]["logs"] = str(tmp) if keep_logs else None
    if not keep_logs:
        shutil.rmtree(tmp, ignore_errors=True)
    return summary


def _wait_pods_ready(lab: Any, namespace: str, pods: int, timeout_s: float) -> list[dict[str, Any]]:
    """The namespace's pods once ``pods`` of them are Running and Ready, with their IPs."""
    deadline = time.monotonic() + timeout_s
    while True:
        items = lab.get_json("pods", "-n", namespace)["items"]
        ready = [p for p in items if _ready(p)]
        if len(ready) >= pods:
            return ready
        if time.monotonic() >= deadline:
            raise E2EError(f"only {len(ready)}/{pods} pods Ready after {timeout_s:.0f}s")
        time.sleep(1)


def _stop_all(probers: list[Prober]) -> None:
    for prober in probers:
        prober.stop()


def _delete_namespace(lab: Any, namespace: str) -> None:
    lab.kubectl(
        "delete",
        "namespace",
        namespace,
        "--wait=true",
        "--timeout=180s",
        check=False,
        timeout_s=200,
    )


def _delete_identities(lab: Any, namespace: str) -> None:
    """The operator's identities for the namespace's label sets (cluster-scoped objects)."""
    lab.kubectl(
        "delete",
        "septumidentities",
        "-l",
        f"septum.io/namespace={namespace}",
        "--wait=false",
        check=False,
    )


def _summary(
    results: list[Apply],
    sampler: RssSampler,
    pods: int,
    pods_ready_s: float,
    interval_ms: float,
    timeout_ms: float,
) -> dict[str, Any]:
    timed = [r.enforce_ms for r in results if r.enforce_ms is not None]
    timeouts = sum(1 for r in results if r.enforce_ms is None)

    def stats(values: list[float]) -> dict[str, float]:
        if not values:
            return {}
        return {
            "p50_ms": round(_percentile(values, 0.5), 1),
            "p99_ms": round(_percentile(values, 0.99), 1),
            "min_ms": round(min(values), 1),
            "max_ms": round(max(values), 1),
        }

    by_transition = {
        kind: stats([r.enforce_ms for r in results if r.transition == kind and r.enforce_ms])
        for kind in ("deny→allow", "allow→deny")
    }
    nodes = sorted({n for r in results for n in r.per_node_ms})
    return {
        "apply_to_enforce_p50_ms": round(_percentile(timed, 0.5), 1) if not timeouts else None,
        "apply_to_enforce_p99_ms": round(_percentile(timed, 0.99), 1) if not timeouts else None,
        "agent_rss_mb": round(max(sampler.peak_agent_mb.values(), default=0.0), 1),
        "operator_rss_mb": round(sampler.peak_operator_mb, 1),
        "details": {
            "machine": {"cpus": os.cpu_count(), "kernel": platform.release()},
            "date": time.strftime("%Y-%m-%d", time.gmtime()),
            "nodes": len(nodes),
            "pods": pods,
            "applies": len(results),
            "timeouts": timeouts,
            "pods_ready_s": round(pods_ready_s, 1),
            "probe_interval_ms": interval_ms,
            "probe_timeout_ms": timeout_ms,
            "hold": HOLD,
            "by_transition": by_transition,
            "by_node": {
                n: stats([r.per_node_ms[n] for r in results if n in r.per_node_ms]) for n in nodes
            },
            "kubectl_apply_return": stats([r.apply_return_ms for r in results]),
            "watch_seen": stats([r.watch_seen_ms for r in results if r.watch_seen_ms is not None]),
            # What the operator-free path adds after the API server's watch fan-out: the
            # agents' watch, compile and datapath write, plus up to one probe interval.
            "enforce_after_watch": stats(
                [
                    r.enforce_ms - r.watch_seen_ms
                    for r in results
                    if r.enforce_ms is not None and r.watch_seen_ms is not None
                ]
            ),
            "probes": sum(r.probes for r in results),
            "flips": sum(r.flips for r in results),
            "agent_rss_mb_peak": {n: round(v, 1) for n, v in sampler.peak_agent_mb.items()},
            "agent_rss_mb_after": {n: round(v, 1) for n, v in sampler.last_agent_mb.items()},
            "operator_rss_mb_after": round(sampler.last_operator_mb, 1),
            "rss_mb_timeline": [
                [round(t, 1), round(agent, 1), round(op, 1)] for t, agent, op in sampler.timeline
            ],
            "per_apply": [
                {
                    "seq": r.seq,
                    "transition": r.transition,
                    "enforce_ms": None if r.enforce_ms is None else round(r.enforce_ms, 1),
                    "apply_return_ms": round(r.apply_return_ms, 1),
                    "watch_seen_ms": None if r.watch_seen_ms is None else round(r.watch_seen_ms, 1),
                    "per_node_ms": {n: round(v, 1) for n, v in r.per_node_ms.items()},
                    "unswitched": r.unswitched,
                }
                for r in results
            ],
            "targets": TARGETS,
        },
    }


# ---- the command --------------------------------------------------------------------------


def _stats_text(stats: dict[str, float]) -> str:
    if not stats:
        return "—"
    return f"{stats['p50_ms']:.0f} / {stats['p99_ms']:.0f} ms (max {stats['max_ms']:.0f})"


def _print_table(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    d = result["details"]
    table = Table(
        "measure",
        "value",
        "target",
        title=(
            f"septum bench e2e ({d['nodes']} nodes, {d['pods']} pods, {d['applies']} applies, "
            f"{d['machine']['cpus']} cpus)"
        ),
    )

    def ms(value: float | None) -> str:
        return "—" if value is None else f"{value:.0f} ms"

    table.add_row(
        "kubectl apply → enforced on every node, p50 / p99",
        f"{ms(result['apply_to_enforce_p50_ms'])} / {ms(result['apply_to_enforce_p99_ms'])}",
        "p99 ≤ 1,000 ms",
    )
    table.add_row(
        "  deny→allow (first SYN let through), p50 / p99",
        _stats_text(d["by_transition"]["deny→allow"]),
        "",
    )
    table.add_row(
        "  allow→deny (first SYN dropped), p50 / p99",
        _stats_text(d["by_transition"]["allow→deny"]),
        "",
    )
    for node, stats in d["by_node"].items():
        table.add_row(f"  servers on {node}, p50 / p99", _stats_text(stats), "")
    table.add_row(
        "reference: kubectl apply returned, p50 / p99", _stats_text(d["kubectl_apply_return"]), ""
    )
    table.add_row(
        "reference: seen by a kubectl get --watch, p50 / p99", _stats_text(d["watch_seen"]), ""
    )
    table.add_row(
        "enforced after the watch saw it, p50 / p99", _stats_text(d["enforce_after_watch"]), ""
    )
    table.add_row("applies not enforced in time", str(d["timeouts"]), "0")
    table.add_row(
        "agent RSS (largest agent, peak)",
        f"{result['agent_rss_mb']:.0f} MB",
        f"≤ {TARGETS['agent_rss_mb']:.0f} MB",
    )
    table.add_row(
        "operator RSS (peak)",
        f"{result['operator_rss_mb']:.0f} MB",
        f"≤ {TARGETS['operator_rss_mb']:.0f} MB",
    )
    table.add_row(
        "probing",
        f"every {d['probe_interval_ms']:g} ms per pair, {d['hold']} in a row, "
        f"drop = no answer in {d['probe_timeout_ms']:g} ms; {d['probes']} connections",
        "",
    )
    table.add_row(f"{d['pods']} pods Running and Ready", f"{d['pods_ready_s']:.0f} s", "")
    Console().print(table)


def _interrupt_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so that the cleanup runs."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


@click.command(name="e2e")
@click.option("--pods", default=200, show_default=True, type=click.IntRange(8, 1000))
@click.option("--applies", default=50, show_default=True, type=click.IntRange(1, 10_000))
@click.option(
    "--probe-interval-ms",
    default=20.0,
    show_default=True,
    type=click.FloatRange(1, 1000),
    help="A new connection per client/server pair this often while an apply is timed.",
)
@click.option(
    "--probe-timeout-ms",
    default=300.0,
    show_default=True,
    type=click.FloatRange(10, 5000),
    help="A connection with no answer after this long counts as dropped.",
)
@click.option(
    "--limit-s",
    default=30.0,
    show_default=True,
    type=click.FloatRange(1, 600),
    help="An apply not enforced on every pair by then counts as a timeout.",
)
@click.option("--keep-logs", is_flag=True, help="Keep the operator's and agents' logs.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
def command(
    pods: int,
    applies: int,
    probe_interval_ms: float,
    probe_timeout_ms: float,
    limit_s: float,
    keep_logs: bool,
    as_json: bool,
) -> None:
    """Policy apply → enforced on every node, by probing traffic; agent and operator RSS."""
    from septum.lab.errors import LabError

    def progress(message: str) -> None:
        click.echo(f"septum bench e2e: {message}", err=True)

    _interrupt_on_sigterm()
    try:
        result = run(
            pods, applies, probe_interval_ms, probe_timeout_ms, limit_s, keep_logs, progress
        )
    except (LabError, E2EError) as err:
        click.echo(f"septum bench e2e: {err}", err=True)
        raise SystemExit(1) from err
    if as_json:
        click.echo(json.dumps(result))
        return
    _print_table(result)
