"""Bad input: an invalid policy is rejected naming field path and reason; nothing else changes."""

from __future__ import annotations

from typing import Any

import pytest

from septum.operator.engine.errors import InvalidPolicy
from septum.operator.engine.explain import explain
from septum.operator.engine.parse import parse_policy
from septum.operator.engine.state import Engine


def cnp(spec: dict[str, Any], name: str = "p", namespace: str = "x") -> dict[str, Any]:
    return {
        "apiVersion": "septum.io/v1alpha1",
        "kind": "SeptumNetworkPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def knp(spec: dict[str, Any], name: str = "p") -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": "x"},
        "spec": spec,
    }


def tier(
    spec: dict[str, Any], name: str = "t", kind: str = "ClusterNetworkPolicy"
) -> dict[str, Any]:
    version = "v1alpha2" if kind == "ClusterNetworkPolicy" else "v1alpha1"
    return {
        "apiVersion": f"policy.networking.k8s.io/{version}",
        "kind": kind,
        "metadata": {"name": name},
        "spec": spec,
    }


EP = {"endpointSelector": {}}
CASES = [
    (
        "bad selector operator",
        cnp(
            {
                "endpointSelector": {
                    "matchExpressions": [{"key": "app", "operator": "Contains", "values": ["a"]}]
                }
            }
        ),
        "spec.endpointSelector.matchExpressions[0].operator",
        "unknown operator",
    ),
    (
        "malformed CIDR",
        cnp({**EP, "ingress": [{"fromCIDR": ["10.0.0.300/8"]}]}),
        "spec.ingress[0].fromCIDR[0]",
        "malformed CIDR",
    ),
    (
        "except outside its CIDR",
        knp(
            {
                "podSelector": {},
                "ingress": [
                    {"from": [{"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.1.0.0/24"]}}]}
                ],
            }
        ),
        "spec.ingress[0].from[0].ipBlock.except[0]",
        "is not inside",
    ),
    (
        "port out of range",
        cnp(
            {
                **EP,
                "ingress": [
                    {"toPorts": [{"ports": [{"port": "80"}]}, {"ports": [{"port": "70000"}]}]}
                ],
            }
        ),
        "spec.ingress[0].toPorts[1].ports[0].port",
        "out of range",
    ),
    (
        "endPort below port",
        knp({"podSelector": {}, "ingress": [{"ports": [{"port": 8080, "endPort": 80}]}]}),
        "spec.ingress[0].ports[0].endPort",
        "below port",
    ),
    (
        "named port with endPort",
        knp({"podSelector": {}, "ingress": [{"ports": [{"port": "http", "endPort": 90}]}]}),
        "spec.ingress[0].ports[0].endPort",
        "named port",
    ),
    (
        "unknown protocol",
        knp({"podSelector": {}, "egress": [{"ports": [{"protocol": "QUIC", "port": 443}]}]}),
        "spec.egress[0].ports[0].protocol",
        "unknown protocol",
    ),
    (
        "unknown entity",
        cnp({**EP, "egress": [{"toEntities": ["internet"]}]}),
        "spec.egress[0].toEntities[0]",
        "unknown entity",
    ),
    (
        "invalid regex in an L7 rule",
        cnp(
            {
                **EP,
                "ingress": [
                    {
                        "toPorts": [
                            {"ports": [{"port": "80"}], "rules": {"http": [{"path": "/api/(["}]}}
                        ]
                    }
                ],
            }
        ),
        "spec.ingress[0].toPorts[0].rules.http[0].path",
        "invalid regular expression",
    ),
    (
        "a headerMatches mismatch action Cilium does not have",
        cnp(
            {
                **EP,
                "ingress": [
                    {
                        "toPorts": [
                            {
                                "ports": [{"port": "80"}],
                                "rules": {
                                    "http": [{"headerMatches": [{"name": "X", "mismatch": "DROP"}]}]
                                },
                            }
                        ]
                    }
                ],
            }
        ),
        "spec.ingress[0].toPorts[0].rules.http[0].headerMatches[0].mismatch",
        "is not one of LOG, ADD, DELETE, REPLACE",
    ),
    (
        "a headerMatches value from a Secret",
        cnp(
            {
                **EP,
                "ingress": [
                    {
                        "toPorts": [
                            {
                                "ports": [{"port": "80"}],
                                "rules": {
                                    "http": [
                                        {"headerMatches": [{"name": "X", "secret": {"name": "s"}}]}
                                    ]
                                },
                            }
                        ]
                    }
                ],
            }
        ),
        "spec.ingress[0].toPorts[0].rules.http[0].headerMatches[0].secret",
        "secrets are not supported",
    ),
    (
        "http and dns rules in one port rule",
        cnp(
            {
                **EP,
                "egress": [
                    {
                        "toPorts": [
                            {
                                "ports": [{"port": "53"}],
                                "rules": {"http": [{}], "dns": [{"matchPattern": "*"}]},
                            }
                        ]
                    }
                ],
            }
        ),
        "spec.egress[0].toPorts[0].rules",
        "cannot be mixed",
    ),
    (
        "L7 rules in a deny section",
        cnp(
            {
                **EP,
                "ingressDeny": [
                    {"toPorts": [{"ports": [{"port": "80"}], "rules": {"http": [{"path": "/"}]}}]}
                ],
            }
        ),
        "spec.ingressDeny[0].toPorts[0].rules",
        "not allowed in a deny section",
    ),
    (
        "unknown field",
        cnp({**EP, "ingres": []}),
        "spec.ingres",
        "unknown field",
    ),
    (
        "both endpointSelector and nodeSelector",
        cnp({"endpointSelector": {}, "nodeSelector": {}}),
        "spec",
        "exactly one of endpointSelector or nodeSelector",
    ),
    (
        "priority out of range",
        tier({"tier": "Admin", "priority": 1001, "subject": {"namespaces": {}}}),
        "spec.priority",
        "out of range",
    ),
    (
        "unknown admin action",
        tier(
            {
                "tier": "Admin",
                "priority": 1,
                "subject": {"namespaces": {}},
                "ingress": [{"action": "Allow", "from": [{"namespaces": {}}]}],
            }
        ),
        "spec.ingress[0].action",
        "unknown action",
    ),
    (
        "Pass in the baseline admin policy",
        tier(
            {
                "subject": {"namespaces": {}},
                "ingress": [{"action": "Pass", "from": [{"namespaces": {}}]}],
            },
            "default",
            "BaselineAdminNetworkPolicy",
        ),
        "spec.ingress[0].action",
        "unknown action",
    ),
    (
        "baseline admin policy not named default",
        tier({"subject": {"namespaces": {}}}, "other", "BaselineAdminNetworkPolicy"),
        "metadata.name",
        "singleton",
    ),
    (
        "port range start above end",
        tier(
            {
                "tier": "Baseline",
                "priority": 1,
                "subject": {"namespaces": {}},
                "egress": [
                    {
                        "action": "Deny",
                        "to": [{"namespaces": {}}],
                        "protocols": [
                            {"tcp": {"destinationPort": {"range": {"start": 90, "end": 80}}}}
                        ],
                    }
                ],
            }
        ),
        "spec.egress[0].protocols[0].tcp.destinationPort.range.end",
        "greater than start",
    ),
    (
        "DNS rules on ingress",
        cnp(
            {
                **EP,
                "ingress": [
                    {
                        "toPorts": [
                            {"ports": [{"port": "53"}], "rules": {"dns": [{"matchName": "a.b"}]}}
                        ]
                    }
                ],
            }
        ),
        "spec.ingress[0].toPorts[0].rules.dns[0]",
        "egress only",
    ),
    (
        "ICMP type name unknown",
        cnp({**EP, "ingress": [{"icmps": [{"fields": [{"type": "Ping"}]}]}]}),
        "spec.ingress[0].icmps[0].fields[0].type",
        "unknown IPv4 ICMP type",
    ),
    (
        "specs list form",
        {
            "apiVersion": "septum.io/v1alpha1",
            "kind": "SeptumNetworkPolicy",
            "metadata": {"name": "l", "namespace": "x"},
            "specs": [
                {"endpointSelector": {}},
                {
                    "endpointSelector": {},
                    "egress": [{"toPorts": [{"ports": [{"port": "0", "endPort": 5}]}]}],
                },
            ],
        },
        "specs[1].egress[0].toPorts[0].ports[0].endPort",
        "non-zero port",
    ),
]


@pytest.mark.parametrize(("name", "obj", "path", "reason"), CASES, ids=[c[0] for c in CASES])
def test_rejected_with_field_path(name: str, obj: dict[str, Any], path: str, reason: str) -> None:
    with pytest.raises(InvalidPolicy) as caught:
        parse_policy(obj)
    error = caught.value.errors[0]
    assert error.path == path, str(caught.value)
    assert reason in error.reason, str(caught.value)
    assert path in str(caught.value)


def _cluster() -> Engine:
    engine = Engine()
    engine.load(
        namespaces=[{"metadata": {"name": "x"}}],
        pods=[
            {
                "metadata": {"name": n, "namespace": "x", "labels": {"app": n}},
                "status": {"podIP": f"10.0.0.{i + 1}"},
            }
            for i, n in enumerate(("a", "b"))
        ],
    )
    return engine


def test_invalid_edit_keeps_the_previous_version_and_touches_nothing_else() -> None:
    engine = _cluster()
    allow_b = knp(
        {
            "podSelector": {"matchLabels": {"app": "a"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "b"}}}]}],
        },
        "a-from-b",
    )
    other = knp({"podSelector": {"matchLabels": {"app": "b"}}, "ingress": []}, "deny-b")
    engine.upsert_policy(allow_b)
    engine.upsert_policy(other)
    before = {key: engine.endpoint_policy(key).entries() for key in engine.endpoints()}
    broken = knp(
        {"podSelector": {"matchLabels": {"app": "a"}}, "ingress": [{"ports": [{"port": 0}]}]},
        "a-from-b",
    )
    with pytest.raises(InvalidPolicy) as caught:
        engine.upsert_policy(broken)
    assert "spec.ingress[0].ports[0].port" in str(caught.value)
    assert {key: engine.endpoint_policy(key).entries() for key in engine.endpoints()} == before
    assert explain(engine, "x/b", "x/a", 80).allowed
    assert not explain(engine, "x/a", "x/b", 80).allowed
    assert [str(k) for k in engine.rejected] == ["NetworkPolicy x/a-from-b"]
    # A valid version replaces it and clears the rejection.
    engine.upsert_policy(allow_b)
    assert not engine.rejected


def test_duplicate_admin_network_policy_priority_is_rejected() -> None:
    engine = _cluster()
    spec = {
        "priority": 5,
        "subject": {"namespaces": {}},
        "ingress": [{"action": "Deny", "from": [{"namespaces": {}}]}],
    }
    engine.upsert_policy(tier(spec, "first", "AdminNetworkPolicy"))
    with pytest.raises(InvalidPolicy) as caught:
        engine.upsert_policy(tier(spec, "second", "AdminNetworkPolicy"))
    assert caught.value.errors[0].path == "spec.priority"
    assert "already used by AdminNetworkPolicy first" in str(caught.value)
    assert not explain(engine, "x/a", "x/b", 80).allowed


def test_load_reports_invalid_policies_and_applies_the_rest() -> None:
    engine = Engine()
    result = engine.load(
        namespaces=[{"metadata": {"name": "x"}}],
        pods=[{"metadata": {"name": "a", "namespace": "x"}, "status": {"podIP": "10.0.0.1"}}],
        policies=[
            knp({"podSelector": {}, "ingress": []}, "ok"),
            cnp({**EP, "egress": [{"toEntities": ["moon"]}]}, "bad"),
        ],
    )
    assert list(result.rejected) == ["SeptumNetworkPolicy x/bad"]
    assert "spec.egress[0].toEntities[0]" in result.rejected["SeptumNetworkPolicy x/bad"]
    assert engine.endpoint_policy(engine.endpoints()[0]).ingress.enforced


# ---- every invalid field is reported, not only the first ----------------------------------


def _paths(obj: dict[str, Any]) -> list[str]:
    with pytest.raises(InvalidPolicy) as info:
        parse_policy(obj)
    return [error.path for error in info.value.errors]


def test_septum_policy_reports_every_invalid_field() -> None:
    obj = cnp(
        {
            "endpointSelector": {},
            "ingress": [
                {"toPorts": [{"ports": [{"port": "80"}]}, {"ports": [{"port": "70000"}]}]},
                {"fromEntities": ["nowhere"]},
            ],
            "egress": [{"icmps": [{"fields": [{"type": "NoSuchType"}]}]}],
        }
    )
    assert _paths(obj) == [
        "spec.ingress[0].toPorts[1].ports[0].port",
        "spec.ingress[1].fromEntities[0]",
        "spec.egress[0].icmps[0].fields[0].type",
    ]
    with pytest.raises(InvalidPolicy) as info:
        parse_policy(obj)
    assert "spec.ingress[0].toPorts[1].ports[0].port: 70000 is out of range" in str(info.value)


def test_network_policy_reports_every_invalid_field() -> None:
    obj = knp(
        {
            "podSelector": {},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"ports": [{"port": 70000}, {"protocol": "ICMP"}]}],
            "egress": [{"to": [{"ipBlock": {"cidr": "bad"}}]}],
        }
    )
    assert _paths(obj) == [
        "spec.ingress[0].ports[0].port",
        "spec.ingress[0].ports[1].protocol",
        "spec.egress[0].to[0].ipBlock.cidr",
    ]


def test_admin_tier_policy_reports_every_invalid_field() -> None:
    obj = tier(
        {
            "tier": "Admin",
            "priority": 5000,
            "subject": {"namespaces": {}},
            "ingress": [
                {"action": "Maybe", "from": [{"namespaces": {}}]},
                {
                    "action": "Accept",
                    "from": [{"namespaces": {}}],
                    "protocols": [{"tcp": {"destinationPort": {"number": 0}}}],
                },
            ],
        }
    )
    assert _paths(obj) == [
        "spec.priority",
        "spec.ingress[0].action",
        "spec.ingress[1].protocols[0].tcp.destinationPort.number",
    ]


# ---- load() raises engine errors only ---------------------------------------------------


def test_load_rejects_malformed_objects_with_engine_errors() -> None:
    from septum.operator.engine.errors import EngineError, EngineNotEmpty, InvalidObject

    bad_pod = {"metadata": {"name": "a"}, "spec": {"containers": ["not-an-object"]}}
    with pytest.raises(InvalidObject):
        Engine().load(pods=[bad_pod])
    with pytest.raises(InvalidObject):
        Engine().load(namespaces=["not-an-object"])  # type: ignore[list-item]
    result = Engine().load(policies=["not-an-object"])  # type: ignore[list-item]
    assert len(result.rejected) == 1
    engine = Engine()
    engine.upsert_pod({"metadata": {"name": "a", "namespace": "x"}})
    with pytest.raises(EngineNotEmpty) as info:
        engine.load()
    assert isinstance(info.value, EngineError) and isinstance(info.value, RuntimeError)


def test_cidr_groups_beside_a_cidr_and_fqdns_naming_both_are_refused() -> None:
    from septum.operator.engine import InvalidPolicy
    from septum.operator.engine.parse import parse_policy

    policy = {
        "apiVersion": "septum.io/v2",
        "kind": "SeptumNetworkPolicy",
        "metadata": {"name": "p", "namespace": "default"},
        "spec": {
            "endpointSelector": {},
            "egress": [
                {"toCIDRSet": [{"cidr": "192.0.2.0/24", "cidrGroupRef": "group"}]},
                {"toFQDNs": [{"matchName": "example.com", "matchPattern": "*.example.com"}]},
            ],
        },
    }
    with pytest.raises(InvalidPolicy) as caught:
        parse_policy(policy)
    paths = [error.path for error in caught.value.errors]
    assert paths == ["spec.egress[0].toCIDRSet[0].cidrGroupRef", "spec.egress[1].toFQDNs[0]"]
