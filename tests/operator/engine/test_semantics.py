"""Unit tests, one per semantic rule of docs/policy-semantics.md not covered by the truth tables."""

from __future__ import annotations

from typing import Any

from septum.operator.engine.cluster import PodKey
from septum.operator.engine.explain import explain
from septum.operator.engine.identities import WORLD_V4
from septum.operator.engine.state import Engine
from septum.wellknown.reserved import LOCAL_IDENTITY_MIN, ReservedIdentity


def pod(
    ns: str, name: str, ip: str, labels: dict[str, str] | None = None, **spec: Any
) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": ns, "labels": labels or {"app": name}},
        "spec": {"containers": [{"ports": [{"name": "http", "containerPort": 8080}]}], **spec},
        "status": {"podIP": ip},
    }


def cluster(*policies: dict[str, Any]) -> Engine:
    engine = Engine(kube_apiserver_ips=["192.0.2.100"])
    engine.load(
        namespaces=[
            {"metadata": {"name": "a", "labels": {"team": "blue"}}},
            {"metadata": {"name": "b"}},
        ],
        pods=[
            pod("a", "web", "10.0.0.1"),
            pod("a", "db", "10.0.0.2"),
            pod("b", "web", "10.0.1.1"),
            pod("b", "client", "10.0.1.2"),
        ],
        nodes=[
            {
                "metadata": {"name": "n1"},
                "status": {"addresses": [{"type": "InternalIP", "address": "172.16.0.1"}]},
            }
        ],
        policies=list(policies),
    )
    return engine


def snp(spec: dict[str, Any], name: str = "p", ns: str | None = "a") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if ns:
        meta["namespace"] = ns
    kind = "SeptumNetworkPolicy" if ns else "SeptumClusterwideNetworkPolicy"
    return {"apiVersion": "septum.io/v1alpha1", "kind": kind, "metadata": meta, "spec": spec}


def knp(spec: dict[str, Any], name: str = "k", ns: str = "a") -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }


WEB = {"matchLabels": {"app": "web"}}


def test_deny_wins_over_allow_from_any_policy_kind() -> None:
    engine = cluster(
        knp({"podSelector": WEB, "ingress": [{}]}),
        snp(
            {
                "endpointSelector": WEB,
                "ingressDeny": [{"fromEndpoints": [{"matchLabels": {"app": "db"}}]}],
            }
        ),
    )
    result = explain(engine, "a/db", "a/web", 80)
    assert not result.allowed
    assert "deny by policy tier: SeptumNetworkPolicy a/p spec.ingressDeny[0]" in result.summary()
    assert explain(engine, "b/client", "a/web", 80).allowed


def test_namespaced_selectors_are_confined_unless_they_name_a_namespace() -> None:
    engine = cluster(
        snp(
            {
                "endpointSelector": WEB,
                "ingress": [{"fromEndpoints": [{"matchLabels": {"app": "client"}}]}],
            },
            "local",
        ),
    )
    assert not explain(engine, "b/client", "a/web", 80).allowed
    named = {"matchLabels": {"app": "client", "k8s:io.kubernetes.pod.namespace": "b"}}
    engine.upsert_policy(
        snp({"endpointSelector": WEB, "ingress": [{"fromEndpoints": [named]}]}, "cross")
    )
    assert explain(engine, "b/client", "a/web", 80).allowed


def test_namespace_labels_and_service_account_are_selectable() -> None:
    by_ns_label = {"matchLabels": {"io.cilium.k8s.namespace.labels.team": "blue"}}
    engine = cluster(
        snp({"endpointSelector": {}, "egress": [{"toEndpoints": [by_ns_label]}]}, ns=None)
    )
    assert explain(engine, "b/client", "a/db", 5432).allowed
    assert not explain(engine, "b/client", "b/web", 80).allowed
    sa = {"matchLabels": {"io.cilium.k8s.policy.serviceaccount": "default"}}
    engine2 = cluster(snp({"endpointSelector": WEB, "ingress": [{"fromEndpoints": [sa]}]}))
    assert explain(engine2, "a/db", "a/web", 80).allowed


def test_pods_cannot_claim_namespace_labels() -> None:
    engine = cluster(
        snp(
            {
                "endpointSelector": WEB,
                "ingress": [
                    {"fromEndpoints": [{"matchLabels": {"io.kubernetes.pod.namespace": "a"}}]}
                ],
            }
        )
    )
    engine.upsert_pod(
        pod(
            "b",
            "liar",
            "10.0.1.9",
            {"io.kubernetes.pod.namespace": "a", "io.cilium.k8s.policy.serviceaccount": "admin"},
        )
    )
    labels = engine.pod_labels(PodKey("b", "liar"))
    assert labels.get("io.kubernetes.pod.namespace") == "b"
    assert labels.get("io.cilium.k8s.policy.serviceaccount") == "default"
    assert not explain(engine, "b/liar", "a/web", 80).allowed


def test_empty_rule_allows_nothing_and_l4_only_rule_allows_every_peer() -> None:
    engine = cluster(snp({"endpointSelector": WEB, "ingress": [{}]}))
    assert not explain(engine, "a/db", "a/web", 80).allowed
    engine.upsert_policy(
        snp(
            {
                "endpointSelector": WEB,
                "ingress": [{"toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}]}]}],
            },
            "l4",
        )
    )
    assert explain(engine, "b/client", "a/web", 80).allowed
    assert explain(engine, "198.51.100.1", "a/web", 80).allowed


def test_icmp_is_not_allowed_once_a_direction_has_an_l4_rule() -> None:
    engine = cluster(
        snp(
            {
                "endpointSelector": WEB,
                "ingress": [
                    {"fromEntities": ["cluster"], "toPorts": [{"ports": [{"port": "80"}]}]}
                ],
            }
        )
    )
    assert explain(engine, "a/db", "a/web", 80, "TCP").allowed
    assert not explain(engine, "a/db", "a/web", 8, "ICMP").allowed
    engine.upsert_policy(
        snp(
            {
                "endpointSelector": WEB,
                "ingress": [{"icmps": [{"fields": [{"type": "EchoRequest"}]}]}],
            },
            "ping",
        )
    )
    assert explain(engine, "a/db", "a/web", 8, "ICMP").allowed
    assert not explain(engine, "a/db", "a/web", 0, "ICMP").allowed
    engine.upsert_policy(snp({"endpointSelector": WEB, "ingress": [{"fromEndpoints": [{}]}]}, "l3"))
    assert explain(engine, "a/db", "a/web", 0, "ICMP").allowed


def test_enable_default_deny_false_only_adds() -> None:
    engine = cluster(
        snp(
            {
                "endpointSelector": WEB,
                "enableDefaultDeny": {"ingress": False},
                "ingressDeny": [{"fromEntities": ["world"]}],
            }
        )
    )
    assert explain(engine, "a/db", "a/web", 80).allowed
    assert not explain(engine, "198.51.100.1", "a/web", 80).allowed
    assert not engine.endpoint_policy(PodKey("a", "db")).ingress.enforced


def test_cidr_rules_do_not_select_pods_and_excepts_are_honoured() -> None:
    spec = {
        "endpointSelector": {},
        "egress": [{"toCIDRSet": [{"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"]}]}],
    }
    engine = cluster(snp(spec, ns=None))
    assert explain(engine, "a/web", "203.0.113.5", 443).allowed
    assert not explain(engine, "a/web", "10.99.0.1", 443).allowed
    assert not explain(engine, "a/web", "a/db", 443).allowed  # a pod, even inside 0.0.0.0/0
    table = engine.ipcache()
    assert table[WORLD_V4] == ReservedIdentity.WORLD_IPV4
    cidr_ids = [n for net, n in table.items() if str(net) == "10.0.0.0/8"]
    assert cidr_ids and cidr_ids[0] >= LOCAL_IDENTITY_MIN


def test_entities() -> None:
    engine = cluster(
        snp(
            {
                "endpointSelector": WEB,
                "ingress": [{"fromEntities": ["kube-apiserver", "remote-node"]}],
            }
        )
    )
    assert explain(engine, "192.0.2.100", "a/web", 443).allowed
    assert explain(engine, "172.16.0.1", "a/web", 443).allowed
    assert not explain(engine, "a/db", "a/web", 443).allowed


def test_l7_rules_mark_entries_for_the_proxy() -> None:
    http = {"http": [{"method": "GET", "path": "/api/.*"}]}
    spec = {
        "endpointSelector": WEB,
        "ingress": [{"toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}], "rules": http}]}],
    }
    engine = cluster(snp(spec))
    result = explain(engine, "a/db", "a/web", 80)
    assert result.allowed and result.ingress is not None and result.ingress.l7
    entries = engine.endpoint_policy(PodKey("a", "web")).ingress.entries
    assert any(e.l7 and e.port_lo == 80 for e in entries)


def test_specs_list_form_and_fqdns_are_carried() -> None:
    obj = snp({}, "list")
    del obj["spec"]
    obj["specs"] = [
        {"endpointSelector": WEB, "egress": [{"toFQDNs": [{"matchName": "example.com"}]}]},
        {"endpointSelector": {"matchLabels": {"app": "db"}}, "ingress": [{"fromEndpoints": [WEB]}]},
    ]
    engine = cluster(obj)
    assert not explain(engine, "a/web", "203.0.113.9", 443).allowed  # FQDNs are not resolved yet
    result = explain(engine, "a/web", "a/db", 5432)
    assert result.ingress is not None and result.ingress.allowed
    assert "specs[1].ingress[0]" in result.ingress.reason
    assert (
        result.egress is not None
        and "SeptumNetworkPolicy a/list selects the source" in result.egress.reason
    )


def test_default_deny_attribution_names_every_isolating_policy() -> None:
    engine = cluster(
        knp({"podSelector": WEB, "ingress": []}, "k1"),
        knp({"podSelector": {}, "policyTypes": ["Ingress"]}, "k2"),
    )
    reason = explain(engine, "b/client", "a/web", 80).ingress
    assert reason is not None
    assert reason.reason == (
        "default deny: NetworkPolicy a/k1, NetworkPolicy a/k2 select the destination "
        "for ingress and no rule allows this"
    )
    egress = explain(engine, "a/web", "b/client", 80).egress
    assert (
        egress is not None
        and egress.reason == "no policy selects the source in this direction (egress)"
    )


def test_hypothetical_endpoints_and_outside_addresses() -> None:
    engine = cluster(
        knp(
            {
                "podSelector": WEB,
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "new"}}}]}],
            }
        )
    )
    assert explain(engine, {"namespace": "a", "labels": {"app": "new"}}, "a/web", 80).allowed
    assert not explain(engine, {"namespace": "b", "labels": {"app": "new"}}, "a/web", 80).allowed
    assert explain(engine, "a/web", "198.51.100.3", 80).ingress is None


def test_audit_mode_flags_entries() -> None:
    engine = cluster(knp({"podSelector": WEB, "ingress": []}))
    changes = engine.upsert_namespace(
        {
            "metadata": {
                "name": "a",
                "labels": {"team": "blue"},
                "annotations": {"policy.septum.io/audit-mode": "true"},
            }
        }
    )
    web = engine.endpoint_policy(PodKey("a", "web"))
    assert web.audit and all(e.audit for e in web.ingress.entries)
    assert changes.endpoints[PodKey("a", "web")].added


def test_named_ports_resolve_per_destination() -> None:
    engine = cluster(
        knp(
            {
                "podSelector": {},
                "policyTypes": ["Egress"],
                "egress": [{"ports": [{"port": "http"}]}],
            },
            ns="b",
        )
    )
    assert explain(engine, "b/client", "a/web", 8080).allowed
    assert not explain(engine, "b/client", "a/web", 80).allowed


def test_v1alpha1_admin_and_baseline_admin_network_policies() -> None:
    def tier(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        return {
            "apiVersion": "policy.networking.k8s.io/v1alpha1",
            "kind": kind,
            "metadata": {"name": name},
            "spec": spec,
        }

    from_b = [{"namespaces": {"matchLabels": {"kubernetes.io/metadata.name": "b"}}}]
    anp = tier(
        "AdminNetworkPolicy",
        "pass-b",
        {
            "priority": 10,
            "subject": {"namespaces": {"matchLabels": {"team": "blue"}}},
            "ingress": [
                {
                    "name": "allow-22",
                    "action": "Allow",
                    "from": from_b,
                    "ports": [{"portNumber": {"protocol": "TCP", "port": 22}}],
                },
                {"name": "pass-rest", "action": "Pass", "from": from_b},
            ],
        },
    )
    banp = tier(
        "BaselineAdminNetworkPolicy",
        "default",
        {
            "subject": {"namespaces": {}},
            "ingress": [{"name": "deny-b", "action": "Deny", "from": from_b}],
        },
    )
    engine = cluster(anp, banp)
    ssh = explain(engine, "b/client", "a/web", 22)
    assert ssh.allowed and ssh.ingress is not None and "admin tier" in ssh.ingress.reason
    web = explain(engine, "b/client", "a/web", 80)
    assert not web.allowed and web.ingress is not None
    assert "deny by baseline tier: BaselineAdminNetworkPolicy default" in web.ingress.reason
    assert web.ingress.passed_by and "('pass-rest')" in str(web.ingress.passed_by[0])
    # A NetworkPolicy allow overrides the baseline deny after the Pass.
    engine.upsert_policy(
        knp({"podSelector": WEB, "ingress": [{"from": [{"namespaceSelector": {}}]}]})
    )
    assert explain(engine, "b/client", "a/web", 80).allowed
