"""crds/ (the chart's crds/): every Septum CRD is structural and in category septum; the upstream
admin-tier CRD installs as published (scripts/fetch-npapi-crds.sh, through the Go module proxy)
and `make crds-upstream` puts that same file in the chart."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CRD_FILES = sorted((ROOT / "crds").glob("septum.io_*.yaml"))
# name -> (scope, short names): the internal objects are scoped as Cilium's are.
EXPECTED = {
    "septumnetworkpolicies.septum.io": ("Namespaced", ["snp"]),
    "septumclusterwidenetworkpolicies.septum.io": ("Cluster", ["sccnp", "scnp"]),
    "septumidentities.septum.io": ("Cluster", ["sid"]),
    "septumendpoints.septum.io": ("Namespaced", ["sep"]),
    "septumnodes.septum.io": ("Cluster", ["sn"]),
}


def _load(path: Path) -> dict[str, Any]:
    crd = yaml.safe_load(path.read_text())
    assert isinstance(crd, dict)
    return crd


def _untyped(schema: dict[str, Any], path: str = "") -> list[str]:
    """Schema nodes with no type (not structural) or that keep unknown fields."""
    bad = [] if schema.get("type") or schema.get("x-kubernetes-int-or-string") else [path]
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        bad.append(path + " (preserve-unknown-fields)")
    for name, sub in schema.get("properties", {}).items():
        bad += _untyped(sub, f"{path}.{name}")
    if isinstance(schema.get("additionalProperties"), dict):
        bad += _untyped(schema["additionalProperties"], path + "{}")
    if "items" in schema:
        bad += _untyped(schema["items"], path + "[]")
    return bad


def test_every_expected_crd_is_there() -> None:
    names = {_load(p)["metadata"]["name"] for p in CRD_FILES}
    assert names == set(EXPECTED)


@pytest.mark.parametrize("path", CRD_FILES, ids=[p.name for p in CRD_FILES])
def test_crd_shape(path: Path) -> None:
    crd = _load(path)
    spec = crd["spec"]
    assert path.name == f"{spec['group']}_{spec['names']['plural']}.yaml"
    scope, short_names = EXPECTED[crd["metadata"]["name"]]
    assert (spec["scope"], spec["names"]["shortNames"]) == (scope, short_names)
    assert spec["names"]["categories"] == ["septum"]
    [version] = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v2", True, True)
    schema = version["schema"]["openAPIV3Schema"]
    assert _untyped(schema) == []
    if "status" in schema["properties"]:
        assert version["subresources"] == {"status": {}}
    for column in version["additionalPrinterColumns"]:
        assert column["jsonPath"].startswith("."), column


def test_the_upstream_cluster_network_policy_crd_is_fetched_as_published() -> None:
    out = subprocess.run(
        [str(ROOT / "scripts" / "fetch-npapi-crds.sh")],
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    path = Path(out.stdout.strip())
    assert path.is_file() and "npapi" in path.parts
    crd = yaml.safe_load(path.read_text())
    assert crd["kind"] == "CustomResourceDefinition"
    assert crd["metadata"]["name"] == "clusternetworkpolicies.policy.networking.k8s.io"
    served = {v["name"] for v in crd["spec"]["versions"] if v["served"]}
    assert "v1alpha2" in served
    # As published: upstream's own annotation names the release the file came from.
    versions_env = (ROOT / "lab" / "gobuild" / "versions.env").read_text()
    pinned = next(
        line.split("=", 1)[1] for line in versions_env.splitlines() if line.startswith("NPAPI_")
    )
    assert crd["metadata"]["annotations"]["policy.networking.k8s.io/bundle-version"] == pinned
    # A second run is served from the cache and prints the same path.
    again = subprocess.run(
        [str(ROOT / "scripts" / "fetch-npapi-crds.sh")],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert again.stdout == out.stdout


def test_the_chart_carries_the_upstream_crd_unchanged() -> None:
    """`make crds-upstream` (run by `make test` and `make demo`) copies it into the chart."""
    out = subprocess.run(
        [str(ROOT / "scripts" / "fetch-npapi-crds.sh")],
        capture_output=True, text=True, timeout=900, check=True,
    )  # fmt: skip
    published = Path(out.stdout.strip())
    in_chart = ROOT / "helm" / "septum" / "crds" / published.name
    assert in_chart.read_bytes() == published.read_bytes()
