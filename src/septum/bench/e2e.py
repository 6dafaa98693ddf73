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
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from septum.bench.e2eprobe import HOLD, E2EError, Prober, start_prober, stop_all
from septum.bench.e2etable import TARGETS, print_table
from septum.bench.e2eworkloads import (
    CLIENTS_PER_NODE,
    POLICY,
    SERVER_PORT,
    SERVERS_PER_NODE,
    pod_ready,
    policy,
    workloads,
)

KEYS = (  # the --json object: these, and everything else under "details"
    "apply_to_enforce_p50_ms",
    "apply_to_enforce_p99_ms",
    "agent_rss_mb",
    "operator_rss_mb",
)
TIMELINE_STEP_S = 5.0  # details.rss_mb_timeline: [seconds, largest agent MB, operator MB]


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
        input_text=json.dumps(policy(namespace, allow)),
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
        for obj in workloads(namespace, [n.name for n in lab.nodes], pods):
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
        stack.callback(stop_all, probers)
        for client in clients:
            probers.append(start_prober(client, list(server_node), interval_ms, timeout_ms))

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
        ready = [p for p in items if pod_ready(p)]
        if len(ready) >= pods:
            return ready
        if time.monotonic() >= deadline:
            raise E2EError(f"only {len(ready)}/{pods} pods Ready after {timeout_s:.0f}s")
        time.sleep(1)


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
    print_table(result)
