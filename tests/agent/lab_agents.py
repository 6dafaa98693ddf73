"""Agents and the operator on the shared lab, for tests: start, wait ready, stop, clean up.

The product leaves its conflist, plugin and pins behind on purpose (a restart must never
open a window); a test that started agents removes them in its teardown.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from septum.lab.config import NodeSpec
from septum.lab.lab import Lab
from septum.lab.pytest_plugin import wait_for

ROOT = Path(__file__).resolve().parents[2]
SEPTUM = str(Path(sys.executable).parent / "septum")
RUN_DIR = Path("/run/septum")
PIN_ROOT = Path("/sys/fs/bpf/septum")
CONFLIST = "05-septum.conflist"


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
        return response.status, json.loads(response.read() or b"{}")
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
            raise AssertionError(f"agent {self.node.name} exited: {self.logs()[-3000:]}")
        try:
            status, _ = get_health(self.health_socket, "readyz")
        except OSError:
            return False
        return status == 200

    def wait_ready(self, timeout_s: float = 60) -> None:
        wait_for(f"agent on {self.node.name} ready", self.ready, timeout_s)

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
        """What the product leaves on purpose: the conflist, the plugin, the pins."""
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
    lab.kubectl("apply", "-f", str(ROOT / "crds"))
    for crd in (
        "septumnetworkpolicies",
        "septumclusterwidenetworkpolicies",
        "septumidentities",
        "septumendpoints",
        "septumnodes",
    ):
        wait_for(
            f"CRD {crd} Established",
            lambda c=crd: lab.kubectl(  # type: ignore[misc]
                "wait", "--for=condition=Established", f"crd/{c}.septum.io", "--timeout=10s",
                check=False,
            ).returncode == 0,
            60,
        )  # fmt: skip


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
    agents = [
        AgentProcess(node, lab, tmp / "state", tmp / f"agent-{node.name}.log", extra)
        for node in lab.nodes
    ]
    try:
        for agent in agents:
            agent.start()
        for agent in agents:
            agent.wait_ready()
        yield agents
    finally:
        for agent in agents:
            agent.stop()


def wait_gone(deadline_s: float, check: Any) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end and not check():
        time.sleep(0.3)


os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
