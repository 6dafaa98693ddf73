"""septum.cli.cluster: the live lists as the engine's input, errors naming --kubeconfig, and
the in-cluster configuration in a pod."""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path

import pytest
import yaml

from septum.cli import cluster
from septum.cli.cluster import collect, default_kubeconfig, in_pod, read_cluster
from septum.cli.policyerrors import ClusterError

from .clusterdata import CLUSTER, DENY_WEB, objects

BROKEN_EDIT = {"ingressDeny": [{"toPorts": [{"ports": [{"port": "70000"}]}]}]}


def _by_kind(text: str) -> dict[str, list[dict[str, object]]]:
    lists: dict[str, list[dict[str, object]]] = {}
    for obj in objects(text):
        lists.setdefault(str(obj["kind"]), []).append(obj)
    return lists


def test_missing_kinds_are_notes_and_invalid_policies_enforce_their_last_valid_spec() -> None:
    lists: dict[str, list[dict[str, object]] | str] = dict(_by_kind(CLUSTER + "---" + DENY_WEB))
    (snp,) = lists["SeptumNetworkPolicy"]
    assert isinstance(snp, dict)
    valid_spec = copy.deepcopy(snp["spec"])
    snp["spec"] = BROKEN_EDIT
    snp["status"] = {"lastValid": {"generation": 1, "spec": valid_spec}}
    never_valid = {**copy.deepcopy(snp), "metadata": {"name": "never", "namespace": "shop"}}
    never_valid.pop("status")
    lists["SeptumNetworkPolicy"] = [snp, never_valid]
    lists["ClusterNetworkPolicy"] = "ClusterNetworkPolicy: not served (a note from the reader)"
    done = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "job", "namespace": "shop"}}
    pods = lists["Pod"]
    assert isinstance(pods, list)
    lists["Pod"] = [*pods, {**done, "status": {"phase": "Succeeded"}}]
    collected = collect(lists)
    assert [p["metadata"]["name"] for p in collected.pods] == ["web", "db"]
    enforced = {p["metadata"]["name"]: p for p in collected.policies}
    assert sorted(enforced) == ["db-from-web", "deny-web"]
    assert enforced["deny-web"]["spec"] == valid_spec
    assert collected.notes == [
        "SeptumNetworkPolicy shop/deny-web: current spec invalid, its last valid version "
        "(generation 1) is loaded, as the agents enforce it",
        "SeptumNetworkPolicy shop/never: invalid and no status.lastValid, not enforced (left out)",
        "ClusterNetworkPolicy: not served (a note from the reader)",
    ]


def test_kubeconfig_errors_name_the_argument(tmp_path: Path) -> None:
    with pytest.raises(ClusterError, match=r"^--kubeconfig .*/nope: no such file$"):
        asyncio.run(read_cluster(tmp_path / "nope"))
    junk = tmp_path / "junk"
    junk.write_text("just text\n")
    with pytest.raises(ClusterError, match=r"^--kubeconfig .*/junk: not a usable kubeconfig"):
        asyncio.run(read_cluster(junk))


def test_unreachable_api_server(tmp_path: Path) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:9"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ClusterError, match=r"^--kubeconfig: cannot reach the API server"):
        asyncio.run(read_cluster(path, timeout_s=2))


def test_in_a_pod_without_a_kubeconfig_the_service_account_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    account = tmp_path / "serviceaccount"
    pod_env = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    assert not in_pod(pod_env, account)  # no token mounted (automountServiceAccountToken off)
    account.mkdir()
    (account / "token").write_text("t")
    assert in_pod(pod_env, account)
    assert not in_pod({}, account)  # not in a pod
    assert default_kubeconfig({"KUBECONFIG": "/k"})

    monkeypatch.setattr(cluster, "in_pod", lambda: True)
    monkeypatch.setattr(cluster, "default_kubeconfig", lambda: False)
    assert cluster.source(None) == cluster.IN_CLUSTER
    assert cluster.source(tmp_path / "k") == "--kubeconfig"  # an explicit one always wins
    # The pod's variables missing: the error names the in-cluster configuration.
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(ClusterError, match=r"^in-cluster configuration \(the pod's service"):
        asyncio.run(read_cluster(None))
    monkeypatch.setattr(cluster, "in_pod", lambda: False)
    assert cluster.source(None) == "--kubeconfig"
