"""The L7 rules the proxy enforces on a redirected connection (explain's DirectionVerdict
.l7_rules): every allowing rule's on that port and peer, as Cilium merges them; an L3/L4 allow
beside an L7 one allows everything at L7."""

from __future__ import annotations

from septum.operator.engine.cluster import PodKey
from septum.operator.engine.explain import explain
from septum.operator.engine.rules import Direction, HeaderMatch, HttpRule, L7Kind

from .test_semantics import WEB, cluster, snp

PORT80 = [{"port": "80", "protocol": "TCP"}]


def _ingress(rules: dict | None, name: str) -> dict:
    to_ports = {"ports": PORT80, **({"rules": rules} if rules else {})}
    return snp({"endpointSelector": WEB, "ingress": [{"toPorts": [to_ports]}]}, name=name)


def test_rules_of_every_allowing_policy_are_merged() -> None:
    engine = cluster(
        _ingress({"http": [{"method": "GET", "path": "/a"}]}, "p1"),
        _ingress({"http": [{"method": "POST", "path": "/b", "headers": ["X-K: v"]}]}, "p2"),
    )
    ingress = explain(engine, "a/db", "a/web", 80).ingress
    assert ingress is not None and ingress.l7
    assert set(ingress.l7_rules.http) == {
        HttpRule("GET", "/a"),
        HttpRule("POST", "/b", headers=("X-K: v",)),
    }
    # another port: no L7 rules at all
    assert explain(engine, "a/db", "a/web", 81).ingress.l7_rules.http == ()  # type: ignore[union-attr]


def test_an_l3l4_allow_beside_an_l7_allow_allows_everything_at_l7() -> None:
    engine = cluster(_ingress({"http": [{"method": "GET"}]}, "p1"), _ingress(None, "p2"))
    ingress = explain(engine, "a/db", "a/web", 80).ingress
    assert ingress is not None and ingress.l7
    assert HttpRule() in ingress.l7_rules.http and HttpRule("GET") in ingress.l7_rules.http


def test_no_l7_rules_no_redirect() -> None:
    ingress = explain(cluster(_ingress(None, "p")), "a/db", "a/web", 80).ingress
    assert ingress is not None and not ingress.l7 and not ingress.l7_rules


def test_header_matches_are_carried_to_the_merged_rules() -> None:
    header_matches = [
        {"name": "X-Env", "value": "prod"},
        {"name": "X-Trace", "value": "on", "mismatch": "ADD"},
    ]
    engine = cluster(_ingress({"http": [{"path": "/a", "headerMatches": header_matches}]}, "p"))
    ingress = explain(engine, "a/db", "a/web", 80).ingress
    assert ingress is not None and ingress.l7
    assert ingress.l7_rules.http == (
        HttpRule(
            path="/a",
            header_matches=(HeaderMatch("X-Env", "prod"), HeaderMatch("X-Trace", "on", "ADD")),
        ),
    )


def test_entries_carry_the_kind_of_their_l7_rules() -> None:
    """So that the agent sends DNS (also over TCP) to the DNS proxy and HTTP to the HTTP one."""
    dns = {"ports": [{"port": "53", "protocol": "ANY"}], "rules": {"dns": [{"matchPattern": "*"}]}}
    http = {"ports": [{"port": "8080", "protocol": "TCP"}], "rules": {"http": [{"method": "GET"}]}}
    egress = snp({"endpointSelector": WEB, "egress": [{"toPorts": [dns, http]}]}, name="e")
    engine = cluster(egress, _ingress({"http": [{"method": "GET"}]}, "i"))
    policy = engine.endpoint_policy(PodKey("a", "web"))
    kinds = {
        (e.direction, e.protocol, e.port_lo): e.l7
        for e in (*policy.ingress.entries, *policy.egress.entries)
        if e.l7
    }
    assert kinds == {
        (Direction.EGRESS, 6, 53): L7Kind.DNS,
        (Direction.EGRESS, 17, 53): L7Kind.DNS,
        (Direction.EGRESS, 132, 53): L7Kind.DNS,  # ANY is TCP, UDP and SCTP
        (Direction.EGRESS, 6, 8080): L7Kind.HTTP,
        (Direction.INGRESS, 6, 80): L7Kind.HTTP,
    }
