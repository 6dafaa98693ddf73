"""What the agent's compiler hands the node's L7 proxies: the merged HTTP rules of a
connection and the identity of an address."""

from __future__ import annotations

from typing import Any

from septum.operator.engine.rules import DnsRule, HttpRule, L7Kind
from septum.wellknown.reserved import ReservedIdentity

from .test_compiler import Cluster, namespace, pod


def _egress_policy(ns: str, selects: dict[str, str], *egress: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "septum.io/v1alpha1", "kind": "SeptumNetworkPolicy",
        "metadata": {"name": "p", "namespace": ns},
        "spec": {"endpointSelector": {"matchLabels": selects}, "egress": list(egress)},
    }  # fmt: skip


def test_http_rules_and_identities_for_the_proxy() -> None:
    cluster = Cluster()
    policy = {
        "apiVersion": "septum.io/v1alpha1",
        "kind": "SeptumNetworkPolicy",
        "metadata": {"name": "landing", "namespace": "empire"},
        "spec": {
            "endpointSelector": {"matchLabels": {"app": "deathstar"}},
            "ingress": [
                {
                    "toPorts": [
                        {
                            "ports": [{"port": "80", "protocol": "TCP"}],
                            "rules": {"http": [{"method": "POST", "path": "/v1/request-landing"}]},
                        }
                    ]
                }
            ],
        },
    }
    tiefighter = pod("empire", "tiefighter", "10.0.0.3", {"app": "tiefighter"})
    cluster.load(
        ("Namespace", namespace("empire")),
        ("Pod", pod("empire", "deathstar", "10.0.0.2", {"app": "deathstar"})),
        ("Pod", tiefighter),
        ("SeptumNetworkPolicy", policy),
    )
    compiler = cluster.compiler
    assert compiler.l7_http_rules("10.0.0.3", "10.0.0.2", 80, ingress=True) == (
        HttpRule("POST", "/v1/request-landing"),
    )
    assert compiler.l7_http_rules("10.0.0.3", "10.0.0.2", 80, ingress=False) == ()
    assert compiler.address_identity("10.0.0.3") >= 1000  # the pod's (Cluster numbers from 1000)
    assert compiler.address_identity("198.51.100.7") == ReservedIdentity.WORLD_IPV4


def test_dns_rules_for_the_dns_proxy() -> None:
    cluster = Cluster()
    policy = {
        "apiVersion": "septum.io/v1alpha1",
        "kind": "SeptumNetworkPolicy",
        "metadata": {"name": "dns", "namespace": "app"},
        "spec": {
            "endpointSelector": {"matchLabels": {"app": "client"}},
            "egress": [
                {
                    "toCIDR": ["192.0.2.53/32"],
                    "toPorts": [
                        {
                            "ports": [{"port": "53", "protocol": "UDP"}],
                            "rules": {"dns": [{"matchPattern": "*.example.com"}]},
                        }
                    ],
                }
            ],
        },
    }
    cluster.load(
        ("Namespace", namespace("app")),
        ("Pod", pod("app", "client", "10.0.0.5", {"app": "client"})),
        ("SeptumNetworkPolicy", policy),
    )
    compiler = cluster.compiler
    assert compiler.l7_dns_rules("10.0.0.5", "192.0.2.53", 53) == (
        DnsRule(match_pattern="*.example.com"),
    )
    assert compiler.l7_dns_rules("10.0.0.5", "192.0.2.54", 53) == ()  # not allowed at all


def test_a_service_frontend_is_decided_by_its_backends() -> None:
    """A pod asks the kube-dns ClusterIP: the DNS proxy sees that address (its packets are not
    translated before the redirect), and the rules are those toward the backends."""
    cluster = Cluster()
    to_kube_dns = {
        "toEndpoints": [{"matchLabels": {
            "k8s:io.kubernetes.pod.namespace": "kube-system", "k8s:k8s-app": "kube-dns",
        }}],
        "toPorts": [
            {"ports": [{"port": "53", "protocol": "UDP"}],
             "rules": {"dns": [{"matchPattern": "*.example.com"}]}},
            {"ports": [{"port": "8080", "protocol": "TCP"}],
             "rules": {"http": [{"method": "GET"}]}},
        ],
    }  # fmt: skip
    policy = _egress_policy("app", {"app": "client"}, to_kube_dns)
    kube_dns = {
        "kind": "Service",
        "metadata": {"namespace": "kube-system", "name": "kube-dns"},
        "spec": {
            "clusterIP": "10.96.0.10",
            "clusterIPs": ["10.96.0.10"],
            "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP"},
                {"name": "metrics", "port": 80, "protocol": "TCP"},
            ],
        },
    }
    slice_ = {
        "kind": "EndpointSlice",
        "metadata": {
            "namespace": "kube-system",
            "name": "kube-dns-x",
            "labels": {"kubernetes.io/service-name": "kube-dns"},
        },
        "addressType": "IPv4",
        "ports": [
            {"name": "dns", "port": 53, "protocol": "UDP"},
            {"name": "metrics", "port": 8080, "protocol": "TCP"},
        ],
        "endpoints": [{"addresses": ["10.0.9.2"], "conditions": {"ready": True}}],
    }
    cluster.load(
        ("Namespace", namespace("app")),
        ("Namespace", namespace("kube-system")),
        ("Pod", pod("app", "client", "10.0.0.5", {"app": "client"})),
        ("Pod", pod("kube-system", "coredns", "10.0.9.2", {"k8s-app": "kube-dns"})),
        ("Service", kube_dns),
        ("EndpointSlice", slice_),
        ("SeptumNetworkPolicy", policy),
    )
    compiler = cluster.compiler
    pattern = (DnsRule(match_pattern="*.example.com"),)
    assert compiler.l7_dns_rules("10.0.0.5", "10.96.0.10", 53) == pattern  # the ClusterIP
    assert compiler.l7_dns_rules("10.0.0.5", "10.0.9.2", 53) == pattern  # the backend itself
    assert compiler.l7_dns_rules("10.0.0.5", "10.96.0.11", 53) == ()  # no Service there
    # TCP port 80 of the Service goes to 8080 on the backend, where the HTTP rule is.
    assert compiler.l7_http_rules("10.0.0.5", "10.96.0.10", 80, ingress=False) == (HttpRule("GET"),)


def test_dns_rules_are_those_of_the_transport_the_query_came_over() -> None:
    cluster = Cluster()
    to_server = {
        "toCIDR": ["192.0.2.53/32"],
        "toPorts": [
            {"ports": [{"port": "53", "protocol": "UDP"}],
             "rules": {"dns": [{"matchPattern": "*.udp.example"}]}},
            {"ports": [{"port": "53", "protocol": "TCP"}],
             "rules": {"dns": [{"matchPattern": "*.tcp.example"}]}},
        ],
    }  # fmt: skip
    cluster.load(
        ("Namespace", namespace("app")),
        ("Pod", pod("app", "client", "10.0.0.5", {"app": "client"})),
        ("SeptumNetworkPolicy", _egress_policy("app", {"app": "client"}, to_server)),
    )
    compiler = cluster.compiler
    udp, tcp = (DnsRule(match_pattern="*.udp.example"),), (DnsRule(match_pattern="*.tcp.example"),)
    assert compiler.l7_dns_rules("10.0.0.5", "192.0.2.53", 53, "UDP") == udp
    assert compiler.l7_dns_rules("10.0.0.5", "192.0.2.53", 53, "TCP") == tcp
    assert compiler.l7_dns_rules("10.0.0.5", "192.0.2.53", 53) == udp  # no transport: UDP's


def test_dns_and_http_rules_met_on_udp_53_go_to_the_dns_proxy() -> None:
    """Two policies select one UDP port, one with rules.dns and one with rules.http: the
    entry's kinds are HTTP|DNS, and its UDP traffic must reach the DNS proxy (the HTTP
    proxy listens on TCP only)."""
    from septum.agent.adapter import endpoint_policy
    from septum.dataplane.abi import TrafficDirection

    def to_dns(rules: dict[str, Any]) -> dict[str, Any]:
        return {
            "toCIDR": ["192.0.2.53/32"],
            "toPorts": [{"ports": [{"port": "53", "protocol": "UDP"}], "rules": rules}],
        }

    with_dns = _egress_policy("app", {"app": "client"}, to_dns({"dns": [{"matchName": "a."}]}))
    with_http = _egress_policy("app", {"app": "client"}, to_dns({"http": [{"method": "GET"}]}))
    with_http["metadata"]["name"] = "q"
    cluster = Cluster()
    cluster.load(
        ("Namespace", namespace("app")),
        ("Pod", pod("app", "client", "10.0.0.5", {"app": "client"})),
        ("SeptumNetworkPolicy", with_dns),
        ("SeptumNetworkPolicy", with_http),
    )
    policy = cluster.compiler.local_policy("app", "client")
    assert policy is not None
    kinds = {e.l7 for e in policy.egress.entries if e.protocol == 17 and e.port_lo == 53}
    assert kinds == {L7Kind.HTTP | L7Kind.DNS}
    translated = endpoint_policy(policy, 15080, 15081, 15082)
    redirected = {
        (e.protocol, e.l7_proxy_port)
        for e in translated.entries
        if e.direction is TrafficDirection.EGRESS and e.l7_proxy_port
    }
    assert redirected == {(17, 15082)}
