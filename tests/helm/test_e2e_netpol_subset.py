"""A representative dozen of the upstream Kubernetes e2e NetworkPolicy specs, unchanged, against
Septum installed by its chart: the part of `make conformance` (issue 13) that runs on every
change. The full suites, and why each spec here stands for its kind, are in docs/conformance.md.
"""

from __future__ import annotations

import re
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from helm_helpers import installed_release  # type: ignore[import-not-found]

from septum.lab.lab import Lab

pytestmark = [pytest.mark.privileged, pytest.mark.lab]

REPO = Path(__file__).resolve().parents[2]
# Each an exact phrase of one spec's name (the UDP and TCP default-deny-ingress specs share
# theirs: both run). Between them: ingress and egress, pod, namespace and multiple selectors,
# ipBlock with except, named ports both ways, Services (the probes go through ClusterIPs:
# egress is decided after translation), UDP, protocol-only rules, policy update and deletion,
# and the API's own CRUD.
SPECS = (
    "should support a 'default-deny-ingress' policy",
    "should support a 'default-deny-all' policy",
    "should enforce policy to allow traffic from pods within server namespace based on PodSelector",
    "should enforce policy based on Multiple PodSelectors and NamespaceSelectors",
    "should allow ingress access on one named port",
    "should allow egress access on one named port",
    "should allow egress access to server in CIDR block",
    "should enforce except clause while egress access to server in CIDR block",
    "should enforce egress policy allowing traffic to a server in a different namespace based "
    "on PodSelector and NamespaceSelector",
    "should enforce ingress policy allowing any port traffic to a server on a specific protocol",
    "should allow ingress access from updated pod",
    "should stop enforcing policies after they are deleted",
    "should support creating NetworkPolicy API operations",
)
SKIP = "SCTP"  # this kernel has no SCTP (docs/conformance.md, Exclusions)


def _e2e_binary() -> Path:
    out = subprocess.run(
        [str(REPO / "lab/gobuild/build-e2e.sh"), "--path"],
        capture_output=True, text=True, timeout=3600, check=True,
    )  # fmt: skip
    binary = Path(out.stdout.strip().splitlines()[-1]) / "e2e.test"
    assert binary.is_file(), out.stdout + out.stderr
    return binary


def _results(report_dir: Path) -> dict[str, bool]:
    """Spec name -> passed, from the suite's JUnit XML (skipped specs left out)."""
    results = {}
    for path in report_dir.glob("junit*.xml"):
        for case in ET.parse(path).getroot().iter("testcase"):
            if case.find("skipped") is not None:
                continue
            failed = case.find("failure") is not None or case.find("error") is not None
            results[case.get("name", "").replace("[It] ", "")] = not failed
    return {name: ok for name, ok in results.items() if "Netpol" in name}


def _reachability_tables(log: str) -> str:
    """The suite's own expected/observed/comparison tables, as it prints them on a failure."""
    lines = log.splitlines()
    picked: list[str] = []
    for i, line in enumerate(lines):
        if re.search(r"\b(expected|observed|comparison):\s*$", line):
            picked += lines[i : i + 14]
    return "\n".join(picked[-300:]) or "\n".join(lines[-80:])


def test_a_representative_dozen_of_the_upstream_netpol_specs_pass(lab: Lab, tmp_path: Path) -> None:
    e2e = _e2e_binary()
    focus = "|".join(re.escape(spec) for spec in SPECS)
    with installed_release(lab, {}):
        run = subprocess.run(
            [
                str(e2e), f"--kubeconfig={lab.kubeconfig}", "--provider=skeleton",
                "--ginkgo.no-color", f"--ginkgo.focus={focus}", f"--ginkgo.skip={SKIP}",
                "--ginkgo.timeout=25m", f"--report-dir={tmp_path}",
            ],
            capture_output=True, text=True, timeout=1800, check=False,
        )  # fmt: skip
    (tmp_path / "e2e.log").write_text(run.stdout + run.stderr)
    results = _results(tmp_path)
    for spec in SPECS:  # every phrase ran at least one spec (a renamed spec must not pass)
        assert any(spec in name for name in results), f"no spec ran for {spec!r}"
    failed = sorted(name for name, ok in results.items() if not ok)
    assert not failed and run.returncode == 0, (
        f"{len(failed)} of {len(results)} specs failed: {failed}\n"
        f"{_reachability_tables(run.stdout)}"
    )
