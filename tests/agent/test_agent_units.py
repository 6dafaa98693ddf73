"""Pure parts of the agent: relists, effective policies, allow-localhost, CNI config."""

from __future__ import annotations

import io
import json
from pathlib import Path

from septum.agent import adapter
from septum.agent.cluster import PODS, relist_events
from septum.agent.cni import chained_conflist, cni_args, run
from septum.agent.compiler import with_localhost, workloads_of
from septum.operator.engine import Engine
from septum.operator.engine.ports import PROTO_TCP


def _pod(name: str, version: str) -> dict[str, object]:
    return {"metadata": {"namespace": "n", "name": name, "resourceVersion": version}}


def test_a_relist_reports_changes_and_deletions_only() -> None:
    known = {("n", "a"): _pod("a", "1"), ("n", "b"): _pod("b", "1")}
    events = relist_events(PODS, known, [_pod("a", "1"), _pod("c", "5")])
    assert [(e.type, e.obj["metadata"]["name"]) for e in events] == [  # type: ignore[index]
        ("upsert", "c"),
        ("delete", "b"),
    ]


def test_allow_localhost_admits_the_host_on_every_protocol_in_the_datapath() -> None:
    engine = Engine(local_node="node1")
    policy = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "p", "namespace": "n"},
        "spec": {
            "podSelector": {},
            "policyTypes": ["Ingress"],
            "ingress": [{"ports": [{"protocol": "TCP", "port": 80}]}],
        },
    }
    engine.upsert_namespace({"metadata": {"name": "n"}})
    engine.upsert_policy(policy)
    engine.upsert_pod({"metadata": {"name": "x", "namespace": "n"}, "spec": {"nodeName": "node1"}})
    ingress = engine.endpoint_policy(engine.endpoints()[0]).ingress
    assert ingress.enforced
    opened = with_localhost(ingress)
    # the engine's own lookup and the adapter's datapath entries agree: host allowed anywhere
    for protocol, port in ((PROTO_TCP, 22), (PROTO_TCP, 80), (17, 53), (1, 8)):
        entry = opened.lookup(1, protocol, port)
        assert entry is not None and entry.verdict.value == "allow", (protocol, port)
    assert opened.lookup(300, PROTO_TCP, 22) is not None
    assert opened.lookup(300, PROTO_TCP, 22).verdict.value == "deny"  # type: ignore[union-attr]
    translated = adapter.direction_entries(opened)
    assert any(e.peer_identity == 1 for e in translated)


def test_a_replicaset_pod_reads_as_its_deployment() -> None:
    pod = {
        "metadata": {
            "labels": {"pod-template-hash": "5d9f"},
            "ownerReferences": [{"kind": "ReplicaSet", "name": "web-5d9f"}],
        }
    }
    assert workloads_of(pod) == (("web", "Deployment"),)


def test_the_chained_conflist_appends_septum_cni(tmp_path: Path) -> None:
    network = {"cniVersion": "1.0.0", "name": "slab", "plugins": [{"type": "ptp"}]}
    chained = chained_conflist(network, tmp_path / "agent.sock")
    assert [p["type"] for p in chained["plugins"]] == ["ptp", "septum-cni"]
    assert chained["name"] == "slab"
    assert chained_conflist(chained, tmp_path / "agent.sock") == chained  # idempotent


def test_the_plugin_fails_add_and_passes_del_while_the_agent_is_down(tmp_path: Path) -> None:
    conf = {"cniVersion": "1.0.0", "agentSocket": str(tmp_path / "none.sock"), "prevResult": {}}
    out = io.StringIO()
    env = {"CNI_COMMAND": "ADD", "CNI_ARGS": "K8S_POD_NAMESPACE=n;K8S_POD_NAME=p"}
    assert run(io.StringIO(json.dumps(conf)), out, env) == 1
    assert json.loads(out.getvalue())["code"] == 11
    assert run(io.StringIO(json.dumps(conf)), io.StringIO(), {**env, "CNI_COMMAND": "DEL"}) == 0
    assert cni_args("IgnoreUnknown=1;K8S_POD_NAME=p") == {"IgnoreUnknown": "1", "K8S_POD_NAME": "p"}
