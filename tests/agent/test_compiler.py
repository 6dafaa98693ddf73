"""The agent's compiler (engine side): audit modes, last valid versions, identities by the
lowest number, node addresses, slim pod objects."""

from __future__ import annotations

import gc
import ipaddress
import json
import tracemalloc
from typing import Any

from septum.agent.compiler import HOST_IDENTITY, REMOTE_NODE_IDENTITY, Compiler, slim_pod
from septum.agent.identities import IdentityStore
from septum.operator.engine.cluster import AUDIT_ANNOTATION, parse_pod
from septum.operator.engine.entries import Verdict
from septum.operator.engine.labels import LabelSet
from septum.operator.identity.objects import identity_object
from septum.wellknown.reserved import LOCAL_IDENTITY_MIN

NODE = "n1"


def namespace(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "labels": {"kubernetes.io/metadata.name": name, **(labels or {})},
        }
    }


def pod(ns: str, name: str, ip: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": ns,
            "uid": f"uid-{name}",
            "labels": {"app": name, **(labels or {})},
            "ownerReferences": [{"kind": "ReplicaSet", "name": f"{name}-abc"}],
            "managedFields": [{"manager": "kubelet", "fieldsV1": {"f:status": {"x": "y" * 400}}}],
        },
        "spec": {
            "nodeName": NODE,
            "serviceAccountName": "default",
            "containers": [
                {
                    "name": "c",
                    "image": "registry.example/app:1",
                    "command": ["sleep", "infinity"],
                    "env": [{"name": f"E{i}", "value": "v" * 40} for i in range(10)],
                    "ports": [{"name": "http", "containerPort": 80, "protocol": "TCP"}],
                    "resources": {"limits": {"cpu": "1", "memory": "1Gi"}},
                    "volumeMounts": [{"name": "token", "mountPath": "/var/run/secrets/x"}],
                }
            ],
            "volumes": [{"name": "token", "projected": {"sources": [{"configMap": {}}]}}],
            "tolerations": [{"key": "k", "operator": "Exists"}],
        },
        "status": {
            "phase": "Running",
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "conditions": [{"type": t, "status": "True"} for t in ("Ready", "Initialized")],
            "containerStatuses": [{"name": "c", "imageID": "sha256:" + "0" * 64, "ready": True}],
        },
    }


def node(name: str, ip: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "status": {
            "addresses": [{"type": "InternalIP", "address": ip}],
            "images": [{"names": [f"img{i}"], "sizeBytes": i} for i in range(50)],
        },
    }


def deny_from(name: str, ns: str, peer: str, audit: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": ns, "generation": 3}
    if audit is not None:
        meta["annotations"] = {AUDIT_ANNOTATION: audit}
    return {
        "apiVersion": "septum.io/v2",
        "kind": "SeptumNetworkPolicy",
        "metadata": meta,
        "spec": {
            "endpointSelector": {"matchLabels": {"app": "server"}},
            "ingressDeny": [{"fromEndpoints": [{"matchLabels": {"app": peer}}]}],
        },
    }


def client_egress_to(name: str, ns: str, block: dict[str, Any]) -> dict[str, Any]:
    """A NetworkPolicy in `ns`: pods `app=client` may reach `block` only."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": ns, "generation": 1},
        "spec": {
            "podSelector": {"matchLabels": {"app": "client"}},
            "policyTypes": ["Egress"],
            "egress": [{"to": [{"ipBlock": block}]}],
        },
    }


class Cluster:
    """A compiler fed like the daemon feeds it, identities made as the operator would."""

    def __init__(self) -> None:
        self.compiler = Compiler(NODE)
        self.next_number = 1000

    def labels_of(self, pod_obj: dict[str, Any]) -> LabelSet:
        namespaces = {
            k[1]: dict(o["metadata"]["labels"])
            for k, o in self.compiler.raw.get("Namespace", {}).items()
        }
        return self.compiler._label_set(pod_obj, namespaces)

    def identity_for(self, pod_obj: dict[str, Any], number: int | None = None) -> int:
        labels = self.labels_of(pod_obj)
        if number is None:
            number = self.next_number
            self.next_number += 1
        self.compiler.apply(
            "SeptumIdentity", "upsert", identity_object(number, labels.source, labels.items)
        )
        return number

    def load(self, *objs: tuple[str, dict[str, Any]]) -> None:
        for kind, obj in objs:
            self.compiler.apply(kind, "upsert", obj)
            if kind == "Pod":
                self.identity_for(obj)
        self.compiler.load()
        self.compiler.take()


def deny_entries(compiler: Compiler, ns: str, name: str) -> list[Any]:
    policy = compiler.local_policy(ns, name)
    assert policy is not None
    return [e for e in policy.ingress.entries if e.verdict is Verdict.DENY]


def test_a_namespace_audit_label_audits_its_pods() -> None:
    cluster = Cluster()
    cluster.load(
        ("Namespace", namespace("au", {AUDIT_ANNOTATION: "enabled"})),
        ("Pod", pod("au", "server", "10.0.0.2")),
        ("Pod", pod("au", "client", "10.0.0.3")),
        ("SeptumNetworkPolicy", deny_from("d", "au", "client")),
    )
    policy = cluster.compiler.local_policy("au", "server")
    assert policy is not None and policy.audit
    assert deny_entries(cluster.compiler, "au", "server")
    assert all(e.audit for e in deny_entries(cluster.compiler, "au", "server"))


def test_a_policy_annotation_audits_that_policy_only_and_follows_edits() -> None:
    cluster = Cluster()
    cluster.load(
        ("Namespace", namespace("au")),
        ("Pod", pod("au", "server", "10.0.0.2")),
        ("Pod", pod("au", "client", "10.0.0.3")),
        ("Pod", pod("au", "other", "10.0.0.4")),
        ("SeptumNetworkPolicy", deny_from("audited", "au", "client", "enabled")),
        ("SeptumNetworkPolicy", deny_from("strict", "au", "other")),
    )
    compiler = cluster.compiler
    client = compiler.identity_of("au", "client")
    other = compiler.identity_of("au", "other")

    def audit_of(peer: int | None) -> set[bool]:
        return {e.audit for e in deny_entries(compiler, "au", "server") if e.peer_identity == peer}

    assert audit_of(client) == {True}
    assert audit_of(other) == {False}
    # the annotation removed: the engine reports the server dirty and its denies drop
    compiler.apply("SeptumNetworkPolicy", "upsert", deny_from("audited", "au", "client"))
    assert ("au", "server") in compiler.take().dirty
    assert audit_of(client) == {False}
    compiler.apply("SeptumNetworkPolicy", "upsert", deny_from("audited", "au", "client", "true"))
    assert ("au", "server") in compiler.take().dirty
    assert audit_of(client) == {True}


def test_an_invalid_policy_is_enforced_as_its_last_valid_version() -> None:
    cluster = Cluster()
    good = deny_from("p", "au", "client")
    bad = deny_from("p", "au", "client")
    bad["spec"]["ingressDeny"][0]["fromEndpoints"] = "not a list"
    bad["status"] = {"lastValid": {"generation": 2, "spec": good["spec"]}}
    cluster.load(
        ("Namespace", namespace("au")),
        ("Pod", pod("au", "server", "10.0.0.2")),
        ("Pod", pod("au", "client", "10.0.0.3")),
        ("SeptumNetworkPolicy", bad),
    )
    assert deny_entries(cluster.compiler, "au", "server")
    cluster.compiler.apply("SeptumNetworkPolicy", "upsert", {**bad, "status": {}})
    assert not deny_entries(cluster.compiler, "au", "server")


def test_identity_store_keeps_the_lowest_number_of_a_label_set() -> None:
    store = IdentityStore()
    labels = LabelSet.of("k8s", (("app", "x"),))
    high = identity_object(2000, "k8s", labels.items)
    low = identity_object(1500, "k8s", labels.items)
    store.upsert(high)
    assert store.lookup(labels) == 2000
    store.upsert(low)
    assert store.lookup(labels) == 1500
    store.upsert(high)  # seen again (a resync): the lowest stays
    assert store.lookup(labels) == 1500
    assert store.labels[2000] == labels  # still known by number
    store.delete(low)
    assert store.lookup(labels) == 2000
    store.delete(high)
    assert store.lookup(labels) is None


def test_pods_move_to_a_lower_duplicate_identity() -> None:
    cluster = Cluster()
    server = pod("au", "server", "10.0.0.2")
    cluster.load(("Namespace", namespace("au")), ("Pod", server))
    compiler = cluster.compiler
    first = compiler.identity_of("au", "server")
    assert first is not None
    cluster.identity_for(server, first - 500)
    assert compiler.identity_of("au", "server") == first - 500
    pending = compiler.take()
    assert pending.ipcache_upserts["10.0.0.2/32"] == first - 500
    assert ("au", "server") in pending.dirty


def test_a_node_address_change_reaches_the_ipcache() -> None:
    cluster = Cluster()
    cluster.load(("Node", node(NODE, "192.168.1.1")), ("Node", node("n2", "192.168.1.2")))
    compiler = cluster.compiler
    compiler.apply("Node", "upsert", node("n2", "192.168.1.22"))
    pending = compiler.take()
    assert pending.ipcache_upserts == {"192.168.1.22/32": REMOTE_NODE_IDENTITY}
    assert pending.ipcache_deletes == {"192.168.1.2/32"}
    compiler.apply("Node", "upsert", node(NODE, "192.168.1.11"))
    pending = compiler.take()
    assert pending.ipcache_upserts["192.168.1.11/32"] == HOST_IDENTITY
    assert "192.168.1.1/32" in pending.ipcache_deletes


def test_a_change_of_unread_fields_is_not_a_change() -> None:
    cluster = Cluster()
    server = pod("au", "server", "10.0.0.2")
    cluster.load(("Namespace", namespace("au")), ("Pod", server), ("Node", node(NODE, "10.1.0.1")))
    compiler = cluster.compiler
    server["status"]["conditions"][0]["status"] = "False"
    compiler.apply("Pod", "upsert", server)
    compiler.apply("Node", "upsert", node(NODE, "10.1.0.1") | {"spec": {"unschedulable": True}})
    pending = compiler.take()
    assert not pending.pods and not pending.dirty and not pending.ipcache_upserts


def test_a_slim_pod_parses_as_the_whole_pod() -> None:
    whole = pod("au", "server", "10.0.0.2")
    whole["spec"]["hostNetwork"] = False
    whole["metadata"]["annotations"] = {AUDIT_ANNOTATION: "enabled"}
    slim = slim_pod(whole)
    assert parse_pod(slim) == parse_pod(whole)
    assert slim["metadata"]["ownerReferences"] == whole["metadata"]["ownerReferences"]
    assert slim["metadata"]["uid"] == "uid-server"
    assert slim["status"] == {
        "phase": "Running",
        "podIP": "10.0.0.2",
        "podIPs": [{"ip": "10.0.0.2"}],
    }
    assert "managedFields" not in slim["metadata"] and "env" not in str(slim)


def _retained_bytes(pods: list[dict[str, Any]], keep: Any) -> int:
    """Bytes still allocated after keeping `keep(pod)` of every pod (the rest dropped)."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = [keep(p) for p in pods]
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert len(kept) == len(pods)
    return after - before


def test_the_compiler_keeps_a_fraction_of_each_pod() -> None:
    """100 pods as the API sends them (JSON-decoded: nothing shared between them)."""
    text = json.dumps(pod("au", "server", "10.0.0.2"))

    def fresh(index: int) -> dict[str, Any]:
        obj: dict[str, Any] = json.loads(text.replace("server", f"server-{index:03d}"))
        return obj

    whole = _retained_bytes([fresh(i) for i in range(100)], lambda p: json.loads(json.dumps(p)))
    # each decoded again: what slim_pod keeps (labels, ownerReferences) is its own, not shared
    slim = _retained_bytes(
        [fresh(i) for i in range(100)], lambda p: slim_pod(json.loads(json.dumps(p)))
    )
    print(f"100 pods kept whole: {whole} B, slim: {slim} B")
    assert slim * 3 < whole


def test_an_ip_block_except_splits_a_label_set_into_node_local_identities() -> None:
    """Two pods of one label set on both sides of a NetworkPolicy ipBlock `except`: the agent
    maps each address to its own class's identity, the split one node-local (the operator
    allocates nothing for it), and reports that identity as the pod's."""
    cluster = Cluster()
    one, two = pod("au", "web", "10.0.0.2"), pod("au", "web", "10.0.0.3")
    two["metadata"]["name"] = "web-2"
    client = pod("au", "client", "10.0.0.9")
    cluster.load(("Namespace", namespace("au")), ("Pod", one), ("Pod", two), ("Pod", client))
    compiler = cluster.compiler
    shared = compiler.identity_of("au", "web")
    assert shared is not None and compiler.identity_of("au", "web-2") == shared
    policy = client_egress_to("p", "au", {"cidr": "10.0.0.0/24", "except": ["10.0.0.2/32"]})
    compiler.apply("NetworkPolicy", "upsert", policy)
    pending = compiler.take()
    first, second = compiler.identity_of("au", "web"), compiler.identity_of("au", "web-2")
    assert first is not None and second is not None and first != second
    assert shared not in (first, second) and min(first, second) >= LOCAL_IDENTITY_MIN
    assert pending.ipcache_upserts["10.0.0.2/32"] == first
    assert pending.ipcache_upserts["10.0.0.3/32"] == second
    assert {("au", "web"), ("au", "web-2")} <= pending.dirty
    facts = compiler.pod_facts("au", "web")
    assert facts is not None and facts.identity == first
    assert any(label.startswith("k8s:io.kubernetes.pod.address-blocks=") for label in facts.labels)
    egress = compiler.local_policy("au", "client")
    assert egress is not None
    allowed = egress.egress.lookup(second, 6, 80)
    denied = egress.egress.lookup(first, 6, 80)
    assert allowed is not None and allowed.verdict is Verdict.ALLOW
    assert denied is not None and denied.verdict is Verdict.DENY
    # The policy goes: both pods are the operator's identity again.
    compiler.apply("NetworkPolicy", "delete", policy)
    compiler.take()
    assert compiler.identity_of("au", "web") == compiler.identity_of("au", "web-2") == shared


def test_an_ip_block_holding_the_node_subnet_reaches_both_node_identities() -> None:
    """Upstream, an ipBlock holding node addresses matches them (kubelet, host-network pods):
    the agent's engine matches its own node (`host`) and the others (`remote-node`)."""
    policy = client_egress_to("to-nodes", "nn", {"cidr": "192.168.0.0/24"})
    cluster = Cluster()
    cluster.load(
        ("Namespace", namespace("nn")),
        ("Node", node(NODE, "192.168.0.1")),
        ("Node", node("n2", "192.168.0.2")),
        ("Pod", pod("nn", "client", "10.0.0.3")),
        ("NetworkPolicy", policy),
    )
    local = cluster.compiler.local_policy("nn", "client")
    assert local is not None and local.egress.enforced
    for peer in (HOST_IDENTITY, REMOTE_NODE_IDENTITY):
        entry = local.egress.lookup(peer, 6, 10250)
        assert entry is not None and entry.verdict is Verdict.ALLOW
    entry = local.egress.lookup(LOCAL_IDENTITY_MIN + 999, 6, 10250)
    assert entry is not None and entry.verdict is Verdict.DENY


def test_addresses_learned_by_the_dns_proxy_reach_the_ipcache_and_the_pod() -> None:
    cluster = Cluster()
    fqdn_policy = {
        "apiVersion": "septum.io/v1alpha1",
        "kind": "SeptumNetworkPolicy",
        "metadata": {"name": "fqdn", "namespace": "a", "generation": 1},
        "spec": {
            "endpointSelector": {"matchLabels": {"app": "client"}},
            "egress": [{"toFQDNs": [{"matchPattern": "*.example.com"}]}],
        },
    }
    client = pod("a", "client", "10.0.0.5", {"app": "client"})
    cluster.load(
        ("Namespace", namespace("a")), ("Pod", client), ("SeptumNetworkPolicy", fqdn_policy)
    )
    compiler = cluster.compiler
    compiler.set_fqdn_addresses({ipaddress.ip_address("203.0.113.10"): ["api.example.com"]})
    pending = compiler.take()
    number = pending.ipcache_upserts["203.0.113.10/32"]
    assert number >= LOCAL_IDENTITY_MIN
    assert ("a", "client") in pending.dirty
    policy = compiler.local_policy("a", "client")
    assert policy is not None
    assert any(e.peer_identity == number for e in policy.egress.entries)
    compiler.set_fqdn_addresses({})
    assert compiler.take().ipcache_deletes == {"203.0.113.10/32"}
