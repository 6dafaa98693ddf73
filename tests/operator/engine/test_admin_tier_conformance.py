"""The admin-tier conformance scenarios of sigs.k8s.io/network-policy-api as truth tables.

Ported from the project's v1alpha2 `ClusterNetworkPolicy` conformance suite
(`conformance/tests/*-standard-*.go` and the named-port experimental tests):
the same houses, pods, ports and rule lists, written here as data. As upstream,
the sub-tests of one scenario run in order and each rule swap stays applied
for the following sub-tests. Every probe is checked with `explain` and with a
lookup in the compiled entries.

The `*-standard-egress-inline-cidr-rules` scenarios (Admin and Baseline) check that
`networks` match cluster-internal traffic: 0.0.0.0/0 denies pod-to-pod traffic, a pod's
/32 accepts exactly that pod (network-policy-api: "cluster-internal traffic will be
checked against the rule as well").

Excluded, with reasons (see docs/policy-semantics.md):
- `*-experimental-egress-rules` node-peer cases: they probe host-network pods
  on specific nodes; identities do not tell nodes apart (node peers are
  approximated by the host/remote-node identities).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import pytest

from septum.operator.engine.cluster import PodKey
from septum.operator.engine.explain import explain
from septum.operator.engine.ports import parse_protocol_name
from septum.operator.engine.rules import PolicyKey
from septum.operator.engine.state import Engine

HOUSES = {
    "gryffindor": "harry-potter",
    "slytherin": "draco-malfoy",
    "hufflepuff": "cedric-diggory",
    "ravenclaw": "luna-lovegood",
    "forbidden-forrest": "centaur",
}
PREFIX = "network-policy-conformance-"
SHORT = {"G": "gryffindor", "S": "slytherin", "H": "hufflepuff", "R": "ravenclaw"}


def pod_ref(short: str) -> str:
    """'G0' -> 'network-policy-conformance-gryffindor/harry-potter-0'."""
    house = SHORT[short[0]]
    return f"{PREFIX}{house}/{HOUSES[house]}-{short[1]}"


def build_cluster() -> Engine:
    engine = Engine()
    namespaces = [
        {"metadata": {"name": PREFIX + h, "labels": {"conformance-house": h}}} for h in HOUSES
    ]
    pods = []
    for index, (house, stem) in enumerate(HOUSES.items()):
        for replica in (0, 1):
            pods.append(
                {
                    "metadata": {
                        "name": f"{stem}-{replica}",
                        "namespace": PREFIX + house,
                        "labels": {"conformance-house": house},
                    },
                    "spec": {
                        "containers": [
                            {
                                "name": "c80",
                                "ports": [{"containerPort": 80, "protocol": "TCP", "name": "web"}],
                            },
                            {
                                "name": "c53",
                                "ports": [{"containerPort": 53, "protocol": "UDP", "name": "dns"}],
                            },
                        ]
                    },
                    "status": {"podIP": f"10.244.{index}.{10 + replica}"},
                }
            )
    engine.load(namespaces=namespaces, pods=pods)
    return engine


def ns_peer(house: str) -> dict[str, Any]:
    return {"namespaces": {"matchLabels": {"kubernetes.io/metadata.name": PREFIX + house}}}


def house_pods(house: str) -> dict[str, Any]:
    sel = {"matchLabels": {"conformance-house": house}}
    return {"pods": {"namespaceSelector": sel, "podSelector": sel}}


def ports(*specs: tuple[str, int]) -> list[dict[str, Any]]:
    return [{proto: {"destinationPort": {"number": number}}} for proto, number in specs]


def rule(
    name: str, action: str, peer: dict[str, Any], direction: str, protos: list[Any] | None = None
) -> dict[str, Any]:
    item: dict[str, Any] = {
        "name": name,
        "action": action,
        ("from" if direction == "ingress" else "to"): [peer],
    }
    if protos:
        item["protocols"] = protos
    return item


def cnp(
    name: str, tier: str, priority: int, subject: dict[str, Any], **sections: list[Any]
) -> dict[str, Any]:
    return {
        "apiVersion": "policy.networking.k8s.io/v1alpha2",
        "kind": "ClusterNetworkPolicy",
        "metadata": {"name": name},
        "spec": {"tier": tier, "priority": priority, "subject": subject, **sections},
    }


def ladder(
    direction: str, x: str, y: str, y_ports: list[Any], z: str, z_ports: list[Any], with_pass: bool
) -> list[Any]:
    """The rules of every single-direction scenario: X everything, Y at a port, Z at a port."""
    rules = [
        rule(f"accept-{x}", "Accept", ns_peer(x), direction),
        rule(f"deny-{x}", "Deny", ns_peer(x), direction),
    ]
    if with_pass:
        rules.append(rule(f"pass-{x}", "Pass", ns_peer(x), direction))
    rules.append(rule(f"deny-{y}-at-port", "Deny", ns_peer(y), direction, y_ports))
    if with_pass:
        rules.append(rule(f"pass-{y}-at-port", "Pass", ns_peer(y), direction, y_ports))
    rules += [
        rule(f"accept-{z}-at-port", "Accept", ns_peer(z), direction, z_ports),
        rule(f"deny-{z}-everything-else", "Deny", ns_peer(z), direction),
    ]
    return rules


Probe = tuple[str, str, str, int, bool]  # client, server, protocol, port, expected


@dataclass
class Scenario:
    policies: list[dict[str, Any]]
    # (mutation, probes): mutation is applied to the first policy before the probes.
    steps: list[tuple[Any, list[Probe]]] = field(default_factory=list)


def swap(section: str, i: int, j: int) -> Any:
    def apply(policy: dict[str, Any]) -> None:
        items = policy["spec"][section]
        items[i], items[j] = items[j], items[i]

    return apply


def both(*mutations: Any) -> Any:
    def apply(policy: dict[str, Any]) -> None:
        for mutation in mutations:
            mutation(policy)

    return apply


def single_direction(
    name: str,
    tier: str,
    priority: int,
    direction: str,
    subject: str,
    x: str,
    y: str,
    y_ports: list[Any],
    z: str,
    z_ports: list[Any],
    probes: list[list[Probe]],
) -> Scenario:
    admin = tier == "Admin"
    policy = cnp(
        name,
        tier,
        priority,
        {"namespaces": {"matchLabels": {"kubernetes.io/metadata.name": PREFIX + subject}}},
        **{direction: ladder(direction, x, y, y_ports, z, z_ports, admin)},
    )
    section = direction
    mutations = [None, None, swap(section, 0, 1), None, swap(section, 0, 2), swap(section, 3, 4)]
    return Scenario([policy], list(zip(mutations, probes, strict=False)))


def P(client: str, server: str, proto: str, port: int, expected: bool) -> Probe:
    return (client, server, proto, port, expected)


SCENARIOS: dict[str, Scenario] = {}

# Ingress / egress, TCP / UDP / SCTP: sub-tests allow (ordering), allow at port,
# deny (after swapping rules 0 and 1), deny at port, pass (swap 0 and 2),
# pass at port (swap 3 and 4).
_INGRESS_TCP = [
    [P("R0", "G0", "tcp", 80, True), P("R1", "G0", "tcp", 8080, True)],
    [P("H0", "G1", "tcp", 80, True), P("H1", "G1", "tcp", 8080, False)],
    [P("R0", "G1", "tcp", 80, False), P("R1", "G1", "tcp", 8080, False)],
    [P("S0", "G0", "tcp", 80, False), P("S1", "G0", "tcp", 8080, True)],
    [P("R0", "G0", "tcp", 80, True), P("R1", "G0", "tcp", 8080, True)],
    [P("S0", "G0", "tcp", 80, True), P("S1", "G0", "tcp", 8080, True)],
]
_EGRESS_TCP = [
    [P("G0", "R0", "tcp", 80, True), P("G1", "R0", "tcp", 8080, True)],
    [P("G0", "H1", "tcp", 8080, True), P("G1", "H1", "tcp", 80, False)],
    [P("G0", "R1", "tcp", 80, False), P("G1", "R1", "tcp", 8080, False)],
    [P("G0", "S0", "tcp", 80, False), P("G1", "S0", "tcp", 8080, True)],
    [P("G0", "R0", "tcp", 80, True), P("G1", "R0", "tcp", 8080, True)],
    [P("G0", "S0", "tcp", 80, True), P("G1", "S0", "tcp", 8080, True)],
]
_INGRESS_UDP = [
    [P("R0", "H0", "udp", 53, True), P("R1", "H0", "udp", 5353, True)],
    [P("G0", "H1", "udp", 53, True), P("G1", "H1", "udp", 5353, False)],
    [P("R0", "H1", "udp", 53, False), P("R1", "H1", "udp", 5353, False)],
    [P("S0", "H0", "udp", 5353, False), P("S1", "H0", "udp", 53, True)],
    [P("R0", "H1", "udp", 5353, True), P("R1", "H1", "udp", 53, True)],
    [P("S0", "H0", "udp", 5353, True), P("S1", "H0", "udp", 53, True)],
]
_EGRESS_UDP = [
    [P("H0", "R0", "udp", 53, True), P("H1", "R0", "udp", 5353, True)],
    [P("H0", "G1", "udp", 53, True), P("H1", "G1", "udp", 5353, False)],
    [P("H0", "R1", "udp", 53, False), P("H1", "R1", "udp", 5353, False)],
    [P("H0", "S0", "udp", 5353, False), P("H1", "S0", "udp", 53, True)],
    [P("H0", "R1", "udp", 5353, True), P("H1", "R1", "udp", 53, True)],
    [P("H0", "S0", "udp", 5353, True), P("H1", "S0", "udp", 53, True)],
]
_INGRESS_SCTP = [
    [P("G0", "R0", "sctp", 9003, True), P("G1", "R0", "sctp", 9005, True)],
    [P("H0", "R1", "sctp", 9003, True), P("H1", "R1", "sctp", 9005, False)],
    [P("G0", "R1", "sctp", 9003, False), P("G1", "R1", "sctp", 9005, False)],
    [P("S0", "R0", "sctp", 9003, False), P("S1", "R0", "sctp", 9005, True)],
    [P("G0", "R1", "sctp", 9003, True), P("G1", "R1", "sctp", 9005, True)],
    [P("S0", "R0", "sctp", 9003, True), P("S1", "R0", "sctp", 9005, True)],
]
_EGRESS_SCTP = [
    [P("R0", "G0", "sctp", 9003, True), P("R1", "G0", "sctp", 9005, True)],
    [P("R0", "H1", "sctp", 9003, True), P("R1", "H1", "sctp", 9005, False)],
    [P("R0", "G1", "sctp", 9003, False), P("R1", "G1", "sctp", 9005, False)],
    [P("R0", "S0", "sctp", 9003, False), P("R1", "S0", "sctp", 9005, True)],
    [P("R0", "G1", "sctp", 9003, True), P("R1", "G1", "sctp", 9005, True)],
    [P("R0", "S0", "sctp", 9003, True), P("R1", "S0", "sctp", 9005, True)],
]
_SINGLE = {
    "ingress-tcp": (
        "ingress",
        "gryffindor",
        "ravenclaw",
        "slytherin",
        [("tcp", 80)],
        "hufflepuff",
        [("tcp", 80)],
        3,
        _INGRESS_TCP,
    ),
    "egress-tcp": (
        "egress",
        "gryffindor",
        "ravenclaw",
        "slytherin",
        [("tcp", 80)],
        "hufflepuff",
        [("tcp", 8080)],
        6,
        _EGRESS_TCP,
    ),
    "ingress-udp": (
        "ingress",
        "hufflepuff",
        "ravenclaw",
        "slytherin",
        [("udp", 5353)],
        "gryffindor",
        [("udp", 53)],
        4,
        _INGRESS_UDP,
    ),
    "egress-udp": (
        "egress",
        "hufflepuff",
        "ravenclaw",
        "slytherin",
        [("udp", 5353)],
        "gryffindor",
        [("udp", 53)],
        7,
        _EGRESS_UDP,
    ),
    "ingress-sctp": (
        "ingress",
        "ravenclaw",
        "gryffindor",
        "slytherin",
        [("sctp", 9003)],
        "hufflepuff",
        [("sctp", 9003)],
        5,
        _INGRESS_SCTP,
    ),
    "egress-sctp": (
        "egress",
        "ravenclaw",
        "gryffindor",
        "slytherin",
        [("sctp", 9003)],
        "hufflepuff",
        [("sctp", 9003)],
        8,
        _EGRESS_SCTP,
    ),
}
for _name, (_dir, _subj, _x, _y, _yp, _z, _zp, _prio, _probes) in _SINGLE.items():
    SCENARIOS[f"admin {_name}"] = single_direction(
        _name, "Admin", _prio, _dir, _subj, _x, _y, ports(*_yp), _z, ports(*_zp), _probes
    )
    # The Baseline tier runs the first four sub-tests (it has no Pass).
    SCENARIOS[f"baseline {_name}"] = single_direction(
        "default", "Baseline", 10, _dir, _subj, _x, _y, ports(*_yp), _z, ports(*_zp), _probes[:4]
    )


def _gress(tier: str) -> Scenario:
    admin = tier == "Admin"
    y_ports = ports(("tcp", 80), ("udp", 53), ("sctp", 9003))
    egress = ladder(
        "egress",
        "ravenclaw",
        "slytherin",
        y_ports,
        "hufflepuff",
        ports(("tcp", 8080), ("udp", 5353), ("sctp", 9003)),
        admin,
    )
    ingress = ladder(
        "ingress",
        "ravenclaw",
        "slytherin",
        y_ports,
        "hufflepuff",
        ports(("tcp", 80), ("udp", 5353), ("sctp", 9003)),
        admin,
    )
    subject = {
        "namespaces": {"matchLabels": {"kubernetes.io/metadata.name": PREFIX + "gryffindor"}}
    }
    policy = cnp(
        "gress-rules" if admin else "default",
        tier,
        15 if admin else 10,
        subject,
        egress=egress,
        ingress=ingress,
    )
    steps: list[tuple[Any, list[Probe]]] = [
        (
            None,
            [
                P("G0", "R0", "tcp", 80, True),
                P("G1", "R0", "udp", 53, True),
                P("G0", "R0", "sctp", 9003, True),
                P("R0", "G0", "tcp", 80, True),
                P("R1", "G0", "udp", 53, True),
                P("R1", "G0", "sctp", 9003, True),
            ],
        ),
        (
            None,
            [
                P("G0", "H1", "tcp", 8080, True),
                P("G1", "H1", "tcp", 80, False),
                P("G0", "H1", "udp", 5353, True),
                P("G1", "H1", "udp", 53, False),
                P("G0", "H1", "sctp", 9003, True),
                P("G1", "H1", "sctp", 9005, False),
                P("H0", "G1", "tcp", 80, True),
                P("H1", "G1", "tcp", 8080, False),
                P("H0", "G1", "udp", 5353, True),
                P("H1", "G1", "udp", 53, False),
                P("H0", "G1", "sctp", 9003, True),
                P("H1", "G1", "sctp", 9005, False),
            ],
        ),
        (
            both(swap("egress", 0, 1), swap("ingress", 0, 1)),
            [
                P("G0", "R1", "tcp", 80, False),
                P("G1", "R1", "udp", 53, False),
                P("G0", "R1", "sctp", 9003, False),
                P("R0", "G1", "tcp", 80, False),
                P("R1", "G1", "udp", 53, False),
                P("R1", "G1", "sctp", 9003, False),
            ],
        ),
        (
            None,
            [
                P("G0", "S0", "tcp", 80, False),
                P("G1", "S0", "tcp", 8080, True),
                P("G0", "S0", "udp", 53, False),
                P("G1", "S0", "udp", 5353, True),
                P("G0", "S0", "sctp", 9003, False),
                P("G1", "S0", "sctp", 9005, True),
                P("S0", "G0", "tcp", 80, False),
                P("S1", "G0", "tcp", 8080, True),
                P("S0", "G0", "udp", 53, False),
                P("S1", "G0", "udp", 5353, True),
                P("S0", "G0", "sctp", 9003, False),
                P("S1", "G0", "sctp", 9005, True),
            ],
        ),
    ]
    if admin:
        steps += [
            (
                both(swap("egress", 0, 2), swap("ingress", 0, 2)),
                [
                    P("G0", "R0", "tcp", 80, True),
                    P("G0", "R0", "udp", 5353, True),
                    P("G0", "R0", "sctp", 9003, True),
                    P("R0", "G0", "tcp", 80, True),
                    P("R1", "G0", "udp", 53, True),
                    P("R1", "G0", "sctp", 9003, True),
                ],
            ),
            (
                both(swap("egress", 3, 4), swap("ingress", 3, 4)),
                [
                    P(c, s, proto, port, True)
                    for c, s in (("G0", "S0"), ("G1", "S0"), ("S0", "G0"), ("S1", "G0"))
                    for proto, port in (
                        ("tcp", 80 if c.endswith("0") else 8080),
                        ("udp", 53 if c.endswith("0") else 5353),
                        ("sctp", 9003 if c.endswith("0") else 9005),
                    )
                ],
            ),
        ]
    return Scenario([policy], steps)


SCENARIOS["admin gress-rules-combined"] = _gress("Admin")
SCENARIOS["baseline gress-rules-combined"] = _gress("Baseline")


def _priority() -> Scenario:
    subject = house_pods("gryffindor")
    deny = cnp(
        "priority-50-example",
        "Admin",
        50,
        subject,
        ingress=[
            rule("deny-all-ingress-from-slytherin", "Deny", house_pods("slytherin"), "ingress")
        ],
        egress=[rule("deny-all-egress-to-slytherin", "Deny", house_pods("slytherin"), "egress")],
    )
    passing = cnp(
        "old-priority-60-new-priority-40-example",
        "Admin",
        60,
        subject,
        ingress=[
            rule("pass-all-ingress-from-slytherin", "Pass", house_pods("slytherin"), "ingress")
        ],
        egress=[rule("pass-all-egress-to-slytherin", "Pass", house_pods("slytherin"), "egress")],
    )
    baseline = cnp(
        "default",
        "Baseline",
        10,
        subject,
        ingress=[
            rule("allow-all-ingress-from-slytherin", "Accept", house_pods("slytherin"), "ingress")
        ],
        egress=[rule("allow-all-egress-to-slytherin", "Accept", house_pods("slytherin"), "egress")],
    )

    def to_40(policy: dict[str, Any]) -> None:
        policy["spec"]["priority"] = 40

    return Scenario(
        [passing, deny, baseline],
        [
            (None, [P("S0", "G0", "tcp", 80, False), P("S1", "G0", "tcp", 8080, False)]),
            (None, [P("G0", "S0", "tcp", 80, False), P("G1", "S0", "tcp", 8080, False)]),
            (
                to_40,
                [
                    P("S0", "G0", "tcp", 80, True),
                    P("S1", "G0", "tcp", 8080, True),
                    P("G0", "S0", "tcp", 80, True),
                    P("G1", "S0", "tcp", 8080, True),
                ],
            ),
        ],
    )


def _integration() -> Scenario:
    house = {"matchLabels": {"conformance-house": "gryffindor"}}
    sly = {"namespaces": {"matchLabels": {"conformance-house": "slytherin"}}}
    admin = cnp(
        "pass-example",
        "Admin",
        10,
        {"namespaces": house},
        ingress=[rule("deny-all-ingress-from-slytherin", "Deny", sly, "ingress")],
        egress=[rule("deny-all-egress-to-slytherin", "Deny", sly, "egress")],
    )
    netpol = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": "allow-gress-from-to-slytherin-to-gryffindor",
            "namespace": PREFIX + "gryffindor",
        },
        "spec": {
            "podSelector": {},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [
                {
                    "from": [
                        {"namespaceSelector": {"matchLabels": {"conformance-house": "slytherin"}}}
                    ]
                }
            ],
            "egress": [
                {"to": [{"namespaceSelector": {"matchLabels": {"conformance-house": "slytherin"}}}]}
            ],
        },
    }
    baseline = cnp(
        "default",
        "Baseline",
        10,
        {"namespaces": house},
        ingress=[rule("deny-all-ingress-from-slytherin", "Deny", sly, "ingress")],
        egress=[rule("deny-all-egress-to-slytherin", "Deny", sly, "egress")],
    )

    def pass_ingress(policy: dict[str, Any]) -> None:
        policy["spec"]["ingress"][0]["action"] = "Pass"

    def pass_egress(policy: dict[str, Any]) -> None:
        policy["spec"]["egress"][0]["action"] = "Pass"

    return Scenario(
        [admin, netpol, baseline],
        [
            (None, [P("S0", "G0", "tcp", 80, False), P("S1", "G0", "tcp", 8080, False)]),
            (None, [P("G0", "S0", "tcp", 80, False), P("G1", "S0", "tcp", 8080, False)]),
            (pass_ingress, [P("S0", "G0", "tcp", 80, True), P("S1", "G0", "tcp", 8080, True)]),
            (pass_egress, [P("G0", "S0", "tcp", 80, True), P("G1", "S0", "tcp", 8080, True)]),
            ("delete-netpol", [P("S0", "G0", "tcp", 80, False), P("S1", "G0", "tcp", 8080, False)]),
            (None, [P("G0", "S0", "tcp", 80, False), P("G1", "S0", "tcp", 8080, False)]),
        ],
    )


SCENARIOS["admin priority field"] = _priority()
SCENARIOS["admin + NetworkPolicy + baseline integration"] = _integration()


def _named(
    name: str, tier: str, base: str, index: int, port_name: str, probes: list[Probe]
) -> Scenario:
    source = SCENARIOS[base].policies[0]

    def to_named(policy: dict[str, Any]) -> None:
        section = "ingress" if "ingress" in policy["spec"] else "egress"
        policy["spec"][section][index]["protocols"] = [{"destinationNamedPort": port_name}]

    return Scenario([copy.deepcopy(source)], [(to_named, probes)])


SCENARIOS["admin egress named port"] = _named(
    "egress-tcp",
    "Admin",
    "admin egress-tcp",
    5,
    "web",
    [P("G0", "H1", "tcp", 80, True), P("G1", "H1", "tcp", 8080, False)],
)
SCENARIOS["admin ingress named port"] = _named(
    "ingress-udp",
    "Admin",
    "admin ingress-udp",
    5,
    "dns",
    [P("G0", "H1", "udp", 53, True), P("G1", "H1", "udp", 5353, False)],
)
SCENARIOS["baseline ingress named port"] = _named(
    "default",
    "Baseline",
    "baseline ingress-tcp",
    3,
    "web",
    [P("H0", "G1", "tcp", 80, True), P("H1", "G1", "tcp", 8080, False)],
)


def _inline_cidr(tier: str) -> Scenario:
    """`*-standard-egress-inline-cidr-rules`: Accept slytherin, then Deny 0.0.0.0/0 and ::/0;
    the second step inserts an Accept of two pods' /32 at index 0."""
    if tier == "Admin":
        name, priority = "inline-cidr-as-peers-example", 85
        subject: dict[str, Any] = house_pods("gryffindor")
    else:
        name, priority = "default", 10
        subject = {
            "namespaces": {"matchLabels": {"kubernetes.io/metadata.name": PREFIX + "gryffindor"}}
        }
    policy = cnp(
        name,
        tier,
        priority,
        subject,
        egress=[
            rule("allow-egress-to-slytherin", "Accept", house_pods("slytherin"), "egress"),
            rule(
                "deny-egress-to-internet",
                "Deny",
                {"networks": ["0.0.0.0/0", "::/0"]},
                "egress",
            ),
        ],
    )

    def insert_pod_ips(policy: dict[str, Any]) -> None:
        # R0 and H0's addresses (build_cluster: house index 3 and 2, replica 0).
        accept = {"networks": ["10.244.3.10/32", "10.244.2.10/32"]}
        policy["spec"]["egress"].insert(
            0, rule("allow-egress-to-specific-podIPs", "Accept", accept, "egress")
        )

    every = [("tcp", 80), ("udp", 53), ("sctp", 9003)]
    return Scenario(
        [policy],
        [
            (
                None,
                [P("G1", s, proto, port, False) for s in ("R0", "H0") for proto, port in every]
                + [P("G1", "S0", proto, port, True) for proto, port in every],
            ),
            (
                insert_pod_ips,
                [P("G1", s, proto, port, True) for s in ("R0", "H0") for proto, port in every]
                + [P("G1", s, proto, port, False) for s in ("R1", "H1") for proto, port in every],
            ),
        ],
    )


SCENARIOS["admin egress inline-cidr"] = _inline_cidr("Admin")
SCENARIOS["baseline egress inline-cidr"] = _inline_cidr("Baseline")


def _entries_verdict(engine: Engine, src: str, dst: str, proto: int, port: int) -> bool:
    s_ns, s_name = src.split("/")
    d_ns, d_name = dst.split("/")
    s_key, d_key = PodKey(s_ns, s_name), PodKey(d_ns, d_name)
    egress = engine.endpoint_policy(s_key).egress.lookup(engine.pod_identity[d_key], proto, port)
    ingress = engine.endpoint_policy(d_key).ingress.lookup(engine.pod_identity[s_key], proto, port)
    return all(e is None or e.verdict.value == "allow" for e in (egress, ingress))


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_conformance_scenario(name: str) -> None:
    scenario = SCENARIOS[name]
    engine = build_cluster()
    policies = copy.deepcopy(scenario.policies)
    for policy in policies:
        engine.upsert_policy(policy)
    for step, (mutation, probes) in enumerate(scenario.steps):
        if mutation == "delete-netpol":
            engine.delete_policy(
                PolicyKey(
                    "NetworkPolicy",
                    PREFIX + "gryffindor",
                    "allow-gress-from-to-slytherin-to-gryffindor",
                )
            )
        elif mutation is not None:
            mutation(policies[0])
            engine.upsert_policy(policies[0])
        for client, server, proto, port, expected in probes:
            src, dst = pod_ref(client), pod_ref(server)
            number = parse_protocol_name(proto)
            result = explain(engine, src, dst, port, number)
            assert result.allowed == expected, f"step {step}: {result.summary()}"
            assert _entries_verdict(engine, src, dst, number, port) == expected, (
                f"step {step}: entries disagree"
            )


def test_scenario_inventory() -> None:
    # 6 single-direction Admin + 6 Baseline, gress Admin + Baseline, priority,
    # integration, three named-port and two inline-cidr scenarios.
    assert len(SCENARIOS) == 21
