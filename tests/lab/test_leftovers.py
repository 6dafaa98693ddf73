"""Which running processes the lab's leftover check counts as the lab's (real processes)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from septum.lab import leftovers


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SEPTUM_CACHE", str(tmp_path))
    return tmp_path


@pytest.fixture()
def spawn() -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []

    def run(binary: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        binary.parent.mkdir(parents=True, exist_ok=True)
        if not binary.exists():
            shutil.copy(shutil.which("bash") or "/bin/bash", binary)
        # bash stands in for the tool: it keeps any further arguments (as $0...) and stays
        # alive while its child sleeps (the `; :` stops it from exec'ing sleep in its place).
        proc = subprocess.Popen(
            [str(binary), "-c", "sleep 60; :", *args],
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )
        started.append(proc)
        return proc

    yield run
    for proc in started:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _pids(found: list[str]) -> set[int]:
    return {int(line.split()[0]) for line in found}


def test_lab_daemons_count_and_client_tools_only_when_they_name_the_lab(
    cache: Path, spawn: Callable[..., subprocess.Popen[bytes]]
) -> None:
    etcd = spawn(cache / "bin" / "kubernetes-v0" / "etcd")
    helm = spawn(cache / "bin" / "helm-v0" / "helm")
    peer = spawn(cache / "bin" / "cilium-peer-v0" / "ciliumpeer")
    kubeconfig = cache / "lab" / "default" / "kubeconfig"
    helm_on_lab = spawn(cache / "bin" / "helm-v0" / "helm", f"--kubeconfig={kubeconfig}")
    kubectl_on_lab = spawn(
        cache / "bin" / "kubernetes-v0" / "kubectl", env={"KUBECONFIG": str(kubeconfig)}
    )

    found = _pids(leftovers._lab_processes())

    assert etcd.pid in found
    assert helm_on_lab.pid in found
    assert kubectl_on_lab.pid in found
    assert helm.pid not in found
    assert peer.pid not in found
