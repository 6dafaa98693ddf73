"""Septum installed on the lab the one way a user installs it: the real helm and the chart."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from septum.demo.errors import HelmError
from septum.demo.waiting import until
from septum.lab.lab import Lab

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "helm" / "septum"
RELEASE = "septum"
NAMESPACE = "kube-system"  # where Cilium installs, and where its users look
AGENT_SELECTOR = "app.kubernetes.io/name=septum-agent"
COMPONENTS = ("daemonset/septum-agent", "deployment/septum-operator", "deployment/septum-relay")


@dataclass
class Release:
    """One Helm release of the chart on a lab."""

    lab: Lab
    name: str = RELEASE
    namespace: str = NAMESPACE
    chart: Path = CHART
    values: Mapping[str, str] = field(default_factory=dict)  # --set key=value

    def helm(self, *args: str, timeout_s: float = 300) -> str:
        proc = subprocess.run(
            [str(self.lab.binaries.helm), f"--kubeconfig={self.lab.kubeconfig}", *args],
            capture_output=True, text=True, timeout=timeout_s, check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            raise HelmError(f"helm {' '.join(args[:2])}: {proc.stderr.strip()}")
        return proc.stdout

    def _set_args(self, extra: Mapping[str, str]) -> list[str]:
        merged = {**self.values, **extra}
        return [f"--set={key}={value}" for key, value in sorted(merged.items())]

    def install(self, timeout_s: float = 300) -> None:
        self.helm(
            "install", self.name, str(self.chart), "-n", self.namespace, "--create-namespace",
            *self._set_args({}), timeout_s=timeout_s,
        )  # fmt: skip
        self.wait_rolled_out(timeout_s)

    def upgrade(self, values: Mapping[str, str], timeout_s: float = 300) -> None:
        """`helm upgrade --reuse-values` with more values; returns once every agent rolled."""
        self.helm(
            "upgrade", self.name, str(self.chart), "-n", self.namespace, "--reuse-values",
            *self._set_args(values), timeout_s=timeout_s,
        )  # fmt: skip
        self.wait_rolled_out(timeout_s)

    def uninstall(self, timeout_s: float = 300) -> None:
        self.helm("uninstall", self.name, "-n", self.namespace, "--wait", timeout_s=timeout_s)
        until(
            "every Septum pod to be gone",
            lambda: not self.pods("app.kubernetes.io/part-of=septum"),
            timeout_s,
        )

    def installed(self) -> bool:
        out = self.helm("list", "-n", self.namespace, "-o", "json")
        return any(r["name"] == self.name for r in json.loads(out or "[]"))

    def wait_rolled_out(self, timeout_s: float) -> None:
        for component in COMPONENTS:
            self.lab.kubectl(
                "rollout", "status", "-n", self.namespace, component, f"--timeout={timeout_s:.0f}s",
                timeout_s=timeout_s + 10,
            )  # fmt: skip

    def pods(self, selector: str) -> list[dict[str, Any]]:
        listed = self.lab.get_json("pods", "-n", self.namespace, "-l", selector)
        return list(listed.get("items", []))

    def agent_pods(self) -> dict[str, dict[str, Any]]:
        """node name -> its agent pod."""
        return {p["spec"].get("nodeName", ""): p for p in self.pods(AGENT_SELECTOR)}

    def relay_pod_ip(self) -> str:
        pods = [
            p for p in self.pods("app.kubernetes.io/name=septum-relay")
            if p.get("status", {}).get("podIP") and not p["metadata"].get("deletionTimestamp")
        ]  # fmt: skip
        if not pods:
            raise HelmError("no running relay pod")
        return str(pods[0]["status"]["podIP"])


def releases_on(lab: Lab) -> list[tuple[str, str]]:
    """(namespace, name) of every Septum agent DaemonSet on the lab, whoever installed it."""
    listed = lab.get_json("daemonsets", "-A", "-l", AGENT_SELECTOR)
    return [(d["metadata"]["namespace"], d["metadata"]["name"]) for d in listed.get("items", [])]


def set_values(pairs: Sequence[str]) -> dict[str, str]:
    """`key=value` strings as a mapping (the CLI's --set)."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise HelmError(f"--set: {pair!r} is not key=value")
        out[key] = value
    return out
