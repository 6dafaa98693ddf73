"""Egress through a Service frontend decided by its backends (septum.agent.serviceegress), and
the compiler that hands it the service table, the frontends' identities and the ipcache.

The engine policies are the real engine's: compiled by `Compiler` from NetworkPolicies, or by
`compile_direction` from random rule sets (tests/agent/policies.py); the datapath side is the
Python model of bpf/lib/policy.h those tests share."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from septum.agent import adapter
from septum.agent.compiler import HOST_IDENTITY, Compiler
from septum.agent.serviceegress import (
    PrefixIdentities,
    ServiceFrontend,
    frontend_entry,
    with_service_entries,
)
from septum.agent.services import Backend, Frontend
from septum.dataplane.abi import TrafficDirection
from septum.dataplane.policy import encode
from septum.operator.engine.entries import NOT_ENFORCED, IdentityPolicy, Verdict
from septum.operator.engine.rules import Direction
from septum.wellknown.reserved import SERVICE_IDENTITY_MIN, ReservedIdentity

from .policies import (
    L7_PROXY_PORT,
    PROBE_PEERS,
    PROBES,
    direction_policies,
    engine_outcome,
    examples,
    model_outcome,
)
from .test_compiler import Cluster, namespace, pod

TCP, UDP = 6, 17
NS = "sv"


def netpol_egress(name: str, to: list[dict[str, Any]], ports: list[int]) -> dict[str, Any]:
    """Pods `app=client` may send to `to` on TCP `ports` only."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": NS, "generation": 1},
        "spec": {
            "podSelector": {"matchLabels": {"app": "client"}},
            "policyTypes": ["Egress"],
            "egress": [{"to": to, "ports": [{"protocol": "TCP", "port": p} for p in ports]}],
        },
    }


TO_DEATHSTAR = [{"podSelector": {"matchLabels": {"class": "deathstar"}}}]


def service(name: str, ip: str, port: int, target_name: str = "") -> dict[str, Any]:
    return {
        "kind": "Service",
        "metadata": {"namespace": NS, "name": name},
        "spec": {
            "clusterIP": ip,
            "clusterIPs": [ip],
            "ports": [{"name": target_name, "port": port, "protocol": "TCP"}],
        },
    }


def endpoints(name: str, target: int, *ips: str) -> dict[str, Any]:
    return {
        "kind": "EndpointSlice",
        "metadata": {
            "namespace": NS,
            "name": f"{name}-x",
            "labels": {"kubernetes.io/service-name": name},
        },
        "addressType": "IPv4",
        "ports": [{"name": "", "port": target, "protocol": "TCP"}],
        "endpoints": [{"addresses": [ip], "conditions": {"ready": True}} for ip in ips],
    }


def starwars(*extra: tuple[str, dict[str, Any]]) -> Cluster:
    """client (10.0.0.3); deathstar pods ds-1, ds-2; xwing; services in front of them."""
    cluster = Cluster()
    cluster.load(
        ("Namespace", namespace(NS)),
        ("Pod", pod(NS, "client", "10.0.0.3")),
        ("Pod", pod(NS, "ds-1", "10.0.1.1", {"class": "deathstar"})),
        ("Pod", pod(NS, "ds-2", "10.0.1.2", {"class": "deathstar"})),
        ("Pod", pod(NS, "xwing", "10.0.2.1", {"class": "xwing"})),
        ("Service", service("deathstar", "10.96.0.20", 80)),
        ("EndpointSlice", endpoints("deathstar", 80, "10.0.1.1", "10.0.1.2")),
        ("Service", service("xwing", "10.96.0.30", 80)),
        ("EndpointSlice", endpoints("xwing", 80, "10.0.2.1")),
        ("Service", service("mixed", "10.96.0.40", 80)),
        ("EndpointSlice", endpoints("mixed", 80, "10.0.1.1", "10.0.2.1")),
        ("Service", service("wrong-port", "10.96.0.50", 80)),
        ("EndpointSlice", endpoints("wrong-port", 8080, "10.0.1.1")),
        ("Service", service("empty", "10.96.0.60", 80)),
        *extra,
    )
    return cluster


def verdict(compiler: Compiler, pod_name: str, ip: str, port: int = 80) -> Verdict | None:
    """What the pod's egress (as the agent writes it) decides for a connection to `ip`."""
    policy = compiler.local_policy(NS, pod_name)
    assert policy is not None
    identity = compiler.frontend_identities.by_ip[ip]
    entry = policy.egress.lookup(identity, TCP, port)
    return entry.verdict if entry is not None else None


def test_a_frontend_is_allowed_when_every_backend_is() -> None:
    cluster = starwars(("NetworkPolicy", netpol_egress("to-ds", TO_DEATHSTAR, [80])))
    compiler = cluster.compiler
    assert verdict(compiler, "client", "10.96.0.20") is Verdict.ALLOW
    assert verdict(compiler, "client", "10.96.0.30") is Verdict.DENY
    # one backend denied among allowed ones: the frontend is denied (kube-proxy may pick it)
    assert verdict(compiler, "client", "10.96.0.40") is Verdict.DENY
    # the service port is allowed, the backends' target port is not: policy is after DNAT
    assert verdict(compiler, "client", "10.96.0.50") is Verdict.DENY
    # no backends: no entry of its own, the generic entries decide (here: denied as world)
    policy = compiler.local_policy(NS, "client")
    assert policy is not None
    empty = compiler.frontend_identities.by_ip["10.96.0.60"]
    assert not policy.egress.peer_entries(empty)
    fallback = policy.egress.lookup(empty, TCP, 80)
    assert fallback is not None and fallback.verdict is Verdict.DENY


def test_the_deciding_rule_is_the_backends() -> None:
    cluster = starwars(("NetworkPolicy", netpol_egress("to-ds", TO_DEATHSTAR, [80])))
    compiler = cluster.compiler
    policy = compiler.local_policy(NS, "client")
    assert policy is not None
    ds = compiler.identity_of(NS, "ds-1")
    xwing = compiler.identity_of(NS, "xwing")
    assert ds is not None and xwing is not None
    for ip, backend in (("10.96.0.20", ds), ("10.96.0.30", xwing), ("10.96.0.40", xwing)):
        via_service = policy.egress.lookup(compiler.frontend_identities.by_ip[ip], TCP, 80)
        direct = policy.egress.lookup(backend, TCP, 80)
        assert via_service is not None and direct is not None
        assert (via_service.verdict, via_service.rule_id) == (direct.verdict, direct.rule_id)


def test_unenforced_egress_is_untouched() -> None:
    cluster = starwars()  # no policy at all
    compiler = cluster.compiler
    policy = compiler.local_policy(NS, "client")
    assert policy is not None and not policy.egress.enforced
    assert policy.egress.entries == ()


def test_the_pod_itself_as_a_backend_is_skipped() -> None:
    """ds-1 may reach no deathstar (not even itself); kube-proxy hairpins its connection to
    itself through the node: the frontend whose only backend it is stays allowed."""
    deny_all = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "ds-deny", "namespace": NS, "generation": 1},
        "spec": {"podSelector": {"matchLabels": {"class": "deathstar"}}, "policyTypes": ["Egress"]},
    }
    cluster = starwars(
        ("NetworkPolicy", deny_all),
        ("Service", service("self", "10.96.0.70", 80)),
        ("EndpointSlice", endpoints("self", 80, "10.0.1.1")),
    )
    compiler = cluster.compiler
    assert verdict(compiler, "ds-1", "10.96.0.70") is Verdict.ALLOW
    assert verdict(compiler, "ds-2", "10.96.0.70") is Verdict.DENY
    # deathstar: ds-1 and ds-2; from ds-1 only ds-2 counts, which is denied
    assert verdict(compiler, "ds-1", "10.96.0.20") is Verdict.DENY


def test_an_ip_block_holding_the_backend_address_allows_the_frontend() -> None:
    """The ipBlock names the backends' addresses, not the ClusterIP: Kubernetes matches it after
    translation, and so does the derived entry."""
    to_block = [{"ipBlock": {"cidr": "10.0.1.0/24"}}]
    cluster = starwars(("NetworkPolicy", netpol_egress("to-block", to_block, [80])))
    compiler = cluster.compiler
    assert verdict(compiler, "client", "10.96.0.20") is Verdict.ALLOW
    assert verdict(compiler, "client", "10.96.0.30") is Verdict.DENY
    # an ipBlock holding the ClusterIP (not the backends) allows nothing behind it
    to_cluster_ip = [{"ipBlock": {"cidr": "10.96.0.0/16"}}]
    cluster = starwars(("NetworkPolicy", netpol_egress("to-svc", to_cluster_ip, [80])))
    assert verdict(cluster.compiler, "client", "10.96.0.20") is Verdict.DENY


def test_frontends_reach_the_ipcache_and_an_engine_cidr_cannot_overwrite_them() -> None:
    """Each frontend address is its service identity in the ipcache; a policy naming the
    ClusterIP's /32 gives the engine a CIDR identity for the same prefix, which stays shadowed
    (the datapath keeps the service identity) until the frontend goes."""
    cluster = Cluster()
    compiler = cluster.compiler
    cluster.load(
        ("Namespace", namespace(NS)),
        ("Pod", pod(NS, "client", "10.0.0.3")),
        ("Pod", pod(NS, "ds-1", "10.0.1.1", {"class": "deathstar"})),
    )
    compiler.apply("Service", "upsert", service("deathstar", "10.96.0.20", 80))
    compiler.apply("EndpointSlice", "upsert", endpoints("deathstar", 80, "10.0.1.1"))
    pending = compiler.take()
    number = compiler.frontend_identities.by_ip["10.96.0.20"]
    assert SERVICE_IDENTITY_MIN <= number
    assert pending.ipcache_upserts == {"10.96.0.20/32": number}
    assert pending.identity_labels == {
        number: (
            "k8s:io.kubernetes.service.namespace=sv",
            "k8s:io.kubernetes.service.name=deathstar",
        )
    }
    assert compiler.identity_labels(number) == pending.identity_labels[number]
    exact = [{"ipBlock": {"cidr": "10.96.0.20/32"}}]
    compiler.apply("NetworkPolicy", "upsert", netpol_egress("exact", exact, [80]))
    pending = compiler.take()
    assert "10.96.0.20/32" not in pending.ipcache_upserts
    assert compiler.written["10.96.0.20/32"] == number
    assert compiler.ipcache.get("10.96.0.20/32") not in (None, number)  # the engine's CIDR id
    compiler.apply("Service", "delete", service("deathstar", "10.96.0.20", 80))
    pending = compiler.take()
    cidr = compiler.ipcache.get("10.96.0.20/32")
    assert pending.ipcache_upserts == {"10.96.0.20/32": cidr}  # the engine's entry, back
    assert pending.identity_labels == {number: ()}
    compiler.apply("NetworkPolicy", "delete", netpol_egress("exact", exact, [80]))
    pending = compiler.take()
    assert "10.96.0.20/32" in pending.ipcache_deletes
    assert "10.96.0.20/32" not in compiler.written


def test_an_external_ip_that_is_a_node_address_stays_the_node() -> None:
    cluster = Cluster()
    compiler = cluster.compiler
    compiler.add_host_addresses(["192.168.0.1"])
    cluster.load(("Namespace", namespace(NS)), ("Pod", pod(NS, "client", "10.0.0.3")))
    svc = service("web", "10.96.0.20", 80)
    svc["spec"]["externalIPs"] = ["192.168.0.1"]
    compiler.apply("Service", "upsert", svc)
    pending = compiler.take()
    assert set(pending.ipcache_upserts) == {"10.96.0.20/32"}
    assert compiler.written["192.168.0.1/32"] == HOST_IDENTITY
    assert "192.168.0.1" not in compiler.frontend_identities.by_ip


def test_a_backend_changing_identity_or_service_changes_mark_enforced_egress_dirty() -> None:
    cluster = starwars(("NetworkPolicy", netpol_egress("to-ds", TO_DEATHSTAR, [80])))
    compiler = cluster.compiler
    assert not compiler.take().egress_dirty  # nothing changed
    # a new backend (a pod the policy does not allow) joins the deathstar service
    compiler.apply("EndpointSlice", "upsert", endpoints("deathstar", 80, "10.0.1.1", "10.0.2.1"))
    assert compiler.take().egress_dirty
    assert verdict(compiler, "client", "10.96.0.20") is Verdict.DENY
    # ds-2 changes its labels: its address gets another identity; its frontends follow
    compiler.apply("EndpointSlice", "upsert", endpoints("deathstar", 80, "10.0.1.2"))
    compiler.take()
    assert verdict(compiler, "client", "10.96.0.20") is Verdict.ALLOW
    relabelled = pod(NS, "ds-2", "10.0.1.2", {"class": "tie"})
    cluster.identity_for(relabelled)
    compiler.apply("Pod", "upsert", relabelled)
    assert compiler.take().egress_dirty
    assert verdict(compiler, "client", "10.96.0.20") is Verdict.DENY
    assert compiler.egress_enforced(NS, "client") and not compiler.egress_enforced(NS, "ds-1")


def test_pods_of_one_policy_share_the_derived_entries_until_services_change() -> None:
    cluster = starwars(
        ("Pod", pod(NS, "client-2", "10.0.0.4", {"app": "client"})),
        ("NetworkPolicy", netpol_egress("to-ds", TO_DEATHSTAR, [80])),
    )
    compiler = cluster.compiler
    first, second = (compiler.local_policy(NS, name) for name in ("client", "client-2"))
    assert first is not None and second is not None
    assert first.egress is second.egress  # derived once
    compiler.apply("EndpointSlice", "upsert", endpoints("deathstar", 80, "10.0.2.1"))
    compiler.take()
    again = compiler.local_policy(NS, "client")
    assert again is not None and again.egress is not first.egress
    assert verdict(compiler, "client", "10.96.0.20") is Verdict.DENY


def test_the_derived_policy_passes_the_adapter_and_the_datapath_decides_alike() -> None:
    cluster = starwars(("NetworkPolicy", netpol_egress("to-ds", TO_DEATHSTAR, [80])))
    policy = cluster.compiler.local_policy(NS, "client")
    assert policy is not None
    encoded = encode(adapter.endpoint_policy(policy))
    for ip in ("10.96.0.20", "10.96.0.30", "10.96.0.40", "10.96.0.50", "10.96.0.60"):
        peer = cluster.compiler.frontend_identities.by_ip[ip]
        for port in (79, 80, 81, 8080):
            want = engine_outcome(policy.egress, peer, TCP, port, 0)
            got = model_outcome(encoded, True, TrafficDirection.EGRESS, peer, TCP, port)
            assert got == want, (ip, port)


def test_prefix_identities_is_a_longest_prefix_match() -> None:
    table = PrefixIdentities()
    table.set("0.0.0.0/0", 9)
    table.set("10.0.0.0/8", 100)
    table.set("10.1.0.0/16", 200)
    table.set("10.1.2.3/32", 300)
    table.set("fd00::/8", 400)
    assert [table.identity_of(ip) for ip in ("10.1.2.3", "10.1.2.4", "10.2.0.1", "8.8.8.8")] == [
        300,
        200,
        100,
        9,
    ]
    assert table.identity_of("fd00::1") == 400
    assert table.identity_of("2001:db8::1") == ReservedIdentity.WORLD
    table.delete("10.1.2.3/32")
    assert table.identity_of("10.1.2.3") == 200
    assert table.covers("10.1.0.0/16", ["192.0.2.1", "10.1.9.9"])
    assert not table.covers("10.1.0.0/16", ["10.2.0.1", "fd00::1"])


# ---- the property: the frontend's verdict is the AND of its backends' ---------------------

SERVICE = SERVICE_IDENTITY_MIN
OWN_IP = "10.9.9.9"
BACKEND_PORTS = (79, 80, 81, 1000, 2000, 8080, 53, 54)


@st.composite
def frontends(draw: Any) -> tuple[ServiceFrontend, dict[str, int]]:
    """A frontend with 0-4 backends on the random policies' peers, sometimes the pod itself."""
    protocol = draw(st.sampled_from((TCP, UDP)))
    count = draw(st.integers(0, 4))
    backends, identities = [], {}
    for index in range(count):
        ip = OWN_IP if draw(st.integers(0, 5)) == 0 else f"10.0.0.{index + 1}"
        backends.append(Backend(ip, draw(st.sampled_from(BACKEND_PORTS))))
        identities[ip] = draw(st.sampled_from(PROBE_PEERS))
    frontend = Frontend("10.96.0.1", protocol, draw(st.sampled_from((80, 443, 53))))
    return ServiceFrontend(SERVICE, frontend, tuple(sorted(set(backends)))), identities


@examples(300)
@given(direction_policies(Direction.EGRESS), frontends())
def test_the_derived_verdict_is_the_and_of_the_backends(egress: Any, case: Any) -> None:
    service, identities = case
    frontend = service.frontend
    derived = with_service_entries(egress, [service], [OWN_IP], identities.__getitem__)
    if not egress.enforced:
        assert derived is egress
        return
    others = [b for b in service.backends if b.ip != OWN_IP]
    decided = [egress.lookup(identities[b.ip], frontend.protocol, b.port) for b in others]
    entry = derived.lookup(SERVICE, frontend.protocol, frontend.port)
    assert entry is not None
    if not service.backends:
        assert entry == egress.lookup(SERVICE, frontend.protocol, frontend.port)
        assert not derived.peer_entries(SERVICE)
        return
    allowed = all(d is None or d.verdict is Verdict.ALLOW for d in decided)
    assert entry.verdict is (Verdict.ALLOW if allowed else Verdict.DENY)
    assert entry.rule_id in {d.rule_id for d in decided if d.verdict is entry.verdict} | {0}
    assert entry == frontend_entry(egress, service, frozenset([OWN_IP]), identities.__getitem__)
    # every other peer decides as before, and the datapath decides as the engine on all
    for peer in PROBE_PEERS:
        for protocol, port in PROBES:
            assert derived.lookup(peer, protocol, port) == egress.lookup(peer, protocol, port)
    written = adapter.endpoint_policy(IdentityPolicy(NOT_ENFORCED, derived), L7_PROXY_PORT)
    encoded = encode(written)
    for protocol, port in (*PROBES, (frontend.protocol, frontend.port)):
        want = engine_outcome(derived, SERVICE, protocol, port, L7_PROXY_PORT)
        got = model_outcome(encoded, True, TrafficDirection.EGRESS, SERVICE, protocol, port)
        assert got == want, (protocol, port)
