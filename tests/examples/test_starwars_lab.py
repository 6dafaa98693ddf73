"""The Star Wars example on the lab: Septum's CRDs served by the real API server, app running."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from septum.lab.lab import Lab
from septum.lab.pytest_plugin import wait_for
from septum.operator.engine.parse import parse_policy

pytestmark = [pytest.mark.privileged, pytest.mark.lab]

ROOT = Path(__file__).resolve().parents[2]
NS = "starwars"
SEPTUM = str(Path(sys.executable).parent / "septum")


@pytest.fixture(scope="module")
def starwars(lab: Lab) -> Iterator[Lab]:
    present_before = lab.crd_names()
    lab.kubectl("apply", "-f", str((ROOT / "crds").resolve()))
    added = lab.crd_names() - present_before
    for crd in ("septumnetworkpolicies.septum.io", "septumclusterwidenetworkpolicies.septum.io"):
        lab.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")
    lab.kubectl("create", "namespace", NS)
    try:
        lab.kubectl("apply", "-n", NS, "-f", str(ROOT / "examples" / "starwars" / "app.yaml"))
        yield lab
    finally:
        lab.kubectl("delete", "namespace", NS, "--wait=true", "--timeout=120s", check=False)
        # Only the CRDs this module added: the lab is shared, and a CRD deleted takes every
        # session's objects of its kind with it.
        if added:
            lab.kubectl("delete", "crd", *sorted(added), "--wait=true", check=False)


def test_the_api_server_serves_septum_policies(starwars: Lab) -> None:
    policy = ROOT / "examples" / "starwars" / "policy-l7.yaml"
    starwars.kubectl("apply", "-n", NS, "-f", str(policy))
    stored = starwars.get_json("snp", "-n", NS, "rule1")
    assert stored["kind"] == "SeptumNetworkPolicy"
    assert stored["spec"]["ingress"][0]["toPorts"][0]["rules"]["http"][0]["method"] == "POST"
    # What the API server stores is what the engine reads: it parses without error.
    parsed = parse_policy(stored)
    assert parsed.key.name == "rule1" and parsed.key.namespace == NS
    listed = starwars.kubectl("get", "septum", "-n", NS, "-o", "name").stdout.split()
    assert "septumnetworkpolicy.septum.io/rule1" in listed


def test_the_api_server_rejects_a_policy_without_spec(starwars: Lab) -> None:
    bad = {
        "apiVersion": "septum.io/v2",
        "kind": "SeptumClusterwideNetworkPolicy",
        "metadata": {"name": "no-spec"},
    }
    out = starwars.kubectl("apply", "-f", "-", input_text=json.dumps(bad), check=False)
    assert out.returncode != 0
    assert "spec" in out.stderr


def test_the_tiefighter_lands(starwars: Lab) -> None:
    def landed() -> bool:
        out = subprocess.run(
            [SEPTUM, "lab", "exec", f"{NS}/tiefighter", "--", "curl", "-s", "-m", "3",
             "-XPOST", f"http://deathstar.{NS}.svc.cluster.local/v1/request-landing"],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        return out.stdout == "Ship landed\n"

    wait_for("the tiefighter to land on the deathstar", landed, 120)
