"""The Helm chart, installed with the real helm into the lab's real API server."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from septum.lab.lab import Lab

pytestmark = [pytest.mark.privileged, pytest.mark.lab]

CHART = Path(__file__).resolve().parents[2] / "helm" / "septum"
CRDS = ("septumnetworkpolicies.septum.io", "septumclusterwidenetworkpolicies.septum.io")


def _helm(lab: Lab, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(lab.binaries.helm), f"--kubeconfig={lab.kubeconfig}", *args],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_lint_passes(lab: Lab) -> None:
    out = _helm(lab, "lint", str(CHART))
    assert out.returncode == 0, out.stdout + out.stderr


def test_install_serves_the_crds_and_uninstall_removes_the_release(lab: Lab) -> None:
    present_before = lab.crd_names()
    try:
        out = _helm(lab, "install", "septum", str(CHART), "-n", "septum-system",
                    "--create-namespace", "--wait", "--timeout", "60s")  # fmt: skip
        assert out.returncode == 0, out.stderr
        for crd in CRDS:
            lab.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")
        releases = json.loads(_helm(lab, "list", "-n", "septum-system", "-o", "json").stdout)
        assert [(r["name"], r["status"]) for r in releases] == [("septum", "deployed")]
        # The CRDs really serve: a cluster-wide policy round-trips through the API server.
        policy = {
            "apiVersion": "septum.io/v2",
            "kind": "SeptumClusterwideNetworkPolicy",
            "metadata": {"name": "helm-check"},
            "spec": {"endpointSelector": {}, "ingress": [{"fromEntities": ["cluster"]}]},
        }
        lab.kubectl("apply", "-f", "-", input_text=json.dumps(policy))
        stored = lab.get_json("scnp", "helm-check")
        assert stored["spec"]["ingress"] == [{"fromEntities": ["cluster"]}]
        out = _helm(lab, "uninstall", "septum", "-n", "septum-system", "--wait")
        assert out.returncode == 0, out.stderr
        assert json.loads(_helm(lab, "list", "-n", "septum-system", "-o", "json").stdout) == []
    finally:
        _helm(lab, "uninstall", "septum", "-n", "septum-system")
        lab.kubectl("delete", "scnp", "helm-check", "--ignore-not-found", check=False)
        # Helm never deletes CRDs on uninstall (by design): the test removes what it made,
        # and only that (the lab is shared: a CRD deleted takes everyone's objects with it).
        added = [crd for crd in CRDS if crd not in present_before]
        if added:
            lab.kubectl("delete", "crd", *added, "--ignore-not-found", "--wait=true", check=False)
        lab.kubectl("delete", "namespace", "septum-system", "--ignore-not-found", check=False)
