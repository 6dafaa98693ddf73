"""What the agent's compiler hands the node's L7 proxies: the merged HTTP rules of a
connection and the identity of an address."""

from __future__ import annotations

from septum.operator.engine.rules import DnsRule, HttpRule
from septum.wellknown.reserved import ReservedIdentity

from .test_compiler import Cluster, namespace, pod


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
