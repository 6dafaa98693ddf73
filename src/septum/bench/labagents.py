"""Septum's operator and agents on a lab's nodes: start, wait ready, stop, clean up.

Shared by the lab tests (tests/agent/lab_agents.py re-exports it) and ``septum bench e2e``.
Each agent runs in its node's network namespace with the node's own CNI directories, as the
design's deployment does. The product leaves its conflist, plugin and pins behind on purpose
(a restart must never open a window); whoever started the agents removes them afterwards
with :meth:`AgentProcess.remove_leftovers`.
"""

from __future__ import annotations

import contextlib
import fcntl
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from septum.lab.config import NodeSpec
from septum.lab.errors import LabError
from septum.lab.lab import Lab
from septum.lab.waiting import WaitTimeout, poll

# The checkout's root: the CRD manifests live in crds/ beside the source roots.
ROOT = Path(__file__).resolve().parents[3]
SEPTUM = str(Path(sys.executable).parent / "septum")
RUN_DIR = Path("/run/septum")
PIN_ROOT = Path("/sys/fs/bpf/septum")
CONFLIST = "05-septum.conflist"
CRDS = (
    "septumnetworkpolicies",
    "septumclusterwidenetworkpolicies",
    "septumidentities",
    "septumendpoints",
    "septumnodes",
)


def poll_until(
    what: str, check: Callable[[], object], timeout_s: float, interval_s: float = 0.3
) -> object:
    """Polls ``check()`` until it returns something truthy; the error names the last value."""
    return poll(what, check, timeout_s, interval_s)


class _UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path: Path) -> None:
        super().__init__("localhost", timeout=3)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(3)
        self.sock.connect(str(self._path))


def get_health(path: Path, what: str) -> tuple[int, dict[str, Any]]:
    conn = _UnixHTTP(path)
    try:
        conn.request("GET", f"/{what}")
        response = conn.getresponse()
        body: dict[str, Any] = json.loads(response.read() or b"{}")
        return response.status, body
    finally:
        conn.close()


@dataclass
class AgentProcess:
    node: NodeSpec
    lab: Lab
    state_dir: Path
    log_path: Path
    extra: tuple[str, ...] = ()
    proc: subprocess.Popen[bytes] | None = None

    @property
    def cni_dir(self) -> Path:
        return self.lab.state.node_dir(self.node.name) / "cni"

    @property
    def health_socket(self) -> Path:
        return RUN_DIR / self.node.name / "health.sock"

    @property
    def observer_socket(self) -> Path:
        return RUN_DIR / self.node.name / "observer.sock"

    def start(self) -> None:
        argv = [
            "ip", "netns", "exec", self.node.netns, SEPTUM, "agent",
            "--node", self.node.name,
            "--kubeconfig", str(self.lab.kubeconfig),
            "--cni-conf-dir", str(self.cni_dir / "net.d"),
            "--cni-bin-dir", str(self.cni_dir / "bin"),
            "--state-dir", str(self.state_dir),
            "--run-dir", str(RUN_DIR),
            "--ct-gc-interval", "5",
            "--log-format", "json",
            *self.extra,
        ]  # fmt: skip
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen(argv, stdout=log, stderr=log, start_new_session=True)
        log.close()

    def ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise LabError(f"agent {self.node.name} exited: {self.logs()[-3000:]}")
        try:
            status, _ = get_health(self.health_socket, "readyz")
        except OSError:
            return False
        return status == 200

    def wait_ready(self, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.ready():  # an exited agent raises at once, with its log
            if time.monotonic() >= deadline:
                raise WaitTimeout(f"agent on {self.node.name} not ready after {timeout_s:.0f}s")
            time.sleep(0.3)

    def kill(self) -> None:
        """SIGKILL: as a crash (nothing cleaned up)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> int | None:
        """SIGTERM, then wait (SIGKILL if it does not stop)."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def remove_leftovers(self) -> None:
        """What the product leaves on purpose: the conflist, the plugin, the pins.

        Not while another session's agent serves the node: they are its own then.
        """
        own = None if self.proc is None else self.proc.pid
        if _agent_pids(self.node.name) - {own}:
            return
        (self.cni_dir / "net.d" / CONFLIST).unlink(missing_ok=True)
        (self.cni_dir / "bin" / "septum-cni").unlink(missing_ok=True)
        shutil.rmtree(PIN_ROOT / self.node.name, ignore_errors=True)
        shutil.rmtree(RUN_DIR / self.node.name, ignore_errors=True)


@dataclass
class OperatorProcess:
    lab: Lab
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        argv = [
            SEPTUM, "operator", "--kubeconfig", str(self.lab.kubeconfig),
            "--health-port", "0", "--log-format", "json", "--identity-gc-interval", "10m",
        ]  # fmt: skip
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen(argv, stdout=log, stderr=log, start_new_session=True)
        log.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def apply_crds(lab: Lab) -> None:
    crds = (ROOT / "crds").resolve()  # a link to the chart's crds/
    if not crds.is_dir():
        raise LabError(f"{crds}: no CRD manifests (run from a Septum checkout)")
    lab.kubectl("apply", "-f", str(crds))
    for crd in CRDS:
        poll_until(
            f"CRD {crd} Established",
            lambda c=crd: lab.kubectl(  # type: ignore[misc]
                "wait", "--for=condition=Established", f"crd/{c}.septum.io", "--timeout=10s",
                check=False,
            ).returncode == 0,
            60,
        )  # fmt: skip


def _agent_pids(node: str) -> set[int | None]:
    """pids of the live `septum agent --node NODE` processes on this machine."""
    import psutil  # type: ignore[import-untyped]

    found: set[int | None] = set()
    for proc in psutil.process_iter(["cmdline", "status"]):
        argv = proc.info["cmdline"] or []
        if proc.info["status"] == psutil.STATUS_ZOMBIE or "agent" not in argv:
            continue
        if any(a.endswith("septum") for a in argv) and "--node" in argv[:-1]:
            if argv[argv.index("--node") + 1] == node:
                found.add(proc.pid)
    return found


def agent_already_running(lab: Lab) -> str | None:
    """The node of a running Septum agent (another session's), if any: a process or a socket."""
    for node in lab.nodes:
        if _agent_pids(node.name):
            return node.name
    for node in lab.nodes:
        try:
            get_health(RUN_DIR / node.name / "health.sock", "healthz")
        except OSError:
            continue
        return node.name
    return None


@contextlib.contextmanager
def agents_lock(
    lab: Lab, timeout_s: float = 1800, on_wait: Callable[[str], None] | None = None
) -> Iterator[None]:
    """Holds the lab's lock on running Septum agents (one set per lab), waiting for it.

    Two agents on one node fight over its pins and its CNI socket, and one session's cleanup
    removes the other's; parallel sessions on the shared lab take turns instead. An flock:
    released by the kernel if the holder dies.
    """
    path = lab.state.run / "septum-agents.lock"
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        deadline = time.monotonic() + timeout_s
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise WaitTimeout(
                        f"another session has run Septum agents on the lab for {timeout_s:.0f}s "
                        f"({path} is locked)"
                    ) from None
                if on_wait is not None and not told:
                    on_wait(f"waiting for another session's agents to stop ({path})")
                    told = True
                time.sleep(1)
        yield
    finally:
        os.close(fd)


def lab_exec(target: str, *cmd: str, timeout_s: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SEPTUM, "lab", "exec", target, "--", *cmd],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def agents_running(
    lab: Lab, tmp: Path, extra: tuple[str, ...] = ()
) -> Iterator[list[AgentProcess]]:
    """Starts one agent per node, yields them once all are ready; when resumed, stops them and
    removes their leftovers before another session may start its own (the lab's agents lock)."""
    agents = [
        AgentProcess(node, lab, tmp / "state", tmp / f"agent-{node.name}.log", extra)
        for node in lab.nodes
    ]
    with agents_lock(lab):
        try:
            for agent in agents:
                agent.start()
            for agent in agents:
                agent.wait_ready()
            yield agents
        finally:
            try:
                for agent in agents:
                    agent.stop()
            finally:
                for agent in agents:
                    agent.remove_leftovers()


def wait_gone(deadline_s: float, check: Any) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end and not check():
        time.sleep(0.3)


os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
