"""The upstream Kubernetes network-policy e2e scenarios as 9x9 truth tables.

Ported from the scenarios of kubernetes `test/e2e/network/netpol/network_policy.go`
(namespaces x, y, z; pods a, b, c; ports 80/81 over TCP, UDP, SCTP). Each
scenario builds the same policies through the engine's incremental API, then
checks every (source, destination) pair twice: with `explain` and with a
lookup in the compiled datapath entries. The full 9-pod model is used even
where upstream now creates fewer pods; expectations for the extra pods follow
the same policy semantics (as in the older upstream versions that used all 9).

The three upstream ipBlock scenarios that put *pod* IPs in an ipBlock ("should
allow egress access to server in CIDR block", "should enforce except clause while
egress access to server in CIDR block", "should ensure an IP overlapping both
IPBlock.CIDR and IPBlock.Except is allowed") need the pods' addresses: they live
in test_netpol_upstream_semantics.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from septum.operator.engine.rules import PolicyKey

NSK = "kubernetes.io/metadata.name"
Step = tuple[Any, ...]


def np(
    name: str,
    ns: str,
    pod_selector: dict[str, Any] | None = None,
    ingress: list[Any] | None = None,
    egress: list[Any] | None = None,
    types: list[str] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"podSelector": pod_selector or {}}
    if ingress is not None:
        spec["ingress"] = ingress
    if egress is not None:
        spec["egress"] = egress
    if types is None:
        types = (["Ingress"] if ingress is not None else []) + (
            ["Egress"] if egress is not None else []
        )
    spec["policyTypes"] = types
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }


def labels(**kw: str) -> dict[str, Any]:
    return {"matchLabels": dict(kw)}


def ns_is(name: str) -> dict[str, Any]:
    return {"matchLabels": {NSK: name}}


def expr(key: str, op: str, *values: str) -> dict[str, Any]:
    return {"matchExpressions": [{"key": key, "operator": op, "values": list(values)}]}


POD_A = labels(pod="a")


def _scenarios() -> dict[str, Callable[[Any], list[Step]]]:
    s: dict[str, Callable[[Any], list[Step]]] = {}

    s["default-deny-ingress"] = lambda R: [
        ("apply", np("deny-ingress", "x", {}, ingress=[])),
        ("check", 80, "TCP", R().peer((None, None), ("x", None), False)),
    ]
    s["default-deny-all"] = lambda R: [
        ("apply", np("deny-all", "x", {}, ingress=[], egress=[])),
        (
            "check",
            80,
            "TCP",
            R().peer((None, None), ("x", None), False).peer(("x", None), (None, None), False),
        ),
    ]
    s["allow from pods within server namespace by podSelector"] = lambda R: [
        (
            "apply",
            np(
                "x-a-allows-x-b", "x", POD_A, ingress=[{"from": [{"podSelector": labels(pod="b")}]}]
            ),
        ),
        ("check", 80, "TCP", R().all_ingress("x/a", False).expect("x/b", "x/a", True)),
    ]
    s["allow ingress traffic for a target"] = lambda R: [
        ("apply", np("deny-all", "x", {}, ingress=[])),
        (
            "apply",
            np(
                "allow-all-to-a",
                "x",
                POD_A,
                ingress=[{"from": [{"podSelector": {}, "namespaceSelector": {}}]}],
            ),
        ),
        ("check", 80, "TCP", R().peer((None, None), ("x", None), False).all_ingress("x/a", True)),
    ]
    s["allow ingress from pods in all namespaces"] = lambda R: [
        (
            "apply",
            np(
                "allow-from-another-ns", "x", POD_A, ingress=[{"from": [{"namespaceSelector": {}}]}]
            ),
        ),
        ("check", 80, "TCP", R()),
    ]
    s["allow only from a different namespace by namespaceSelector"] = lambda R: [
        (
            "apply",
            np(
                "allow-client-a-via-ns-selector",
                "x",
                POD_A,
                ingress=[{"from": [{"namespaceSelector": ns_is("y")}]}],
            ),
        ),
        (
            "check",
            80,
            "TCP",
            R().peer(("x", None), ("x", "a"), False).peer(("z", None), ("x", "a"), False),
        ),
    ]
    s["podSelector with matchExpressions"] = lambda R: [
        (
            "apply",
            np(
                "x-a-allows-x-b",
                "x",
                POD_A,
                ingress=[{"from": [{"podSelector": expr("pod", "In", "b")}]}],
            ),
        ),
        ("check", 80, "TCP", R().all_ingress("x/a", False).expect("x/b", "x/a", True)),
    ]
    s["namespaceSelector with matchExpressions"] = lambda R: [
        (
            "apply",
            np(
                "allow-ns-y",
                "x",
                POD_A,
                ingress=[{"from": [{"namespaceSelector": expr(NSK, "In", "y")}]}],
            ),
        ),
        (
            "check",
            80,
            "TCP",
            R().peer(("x", None), ("x", "a"), False).peer(("z", None), ("x", "a"), False),
        ),
    ]
    s["podSelector or namespaceSelector"] = lambda R: [
        (
            "apply",
            np(
                "allow-ns-not-x-or-pod-b",
                "x",
                POD_A,
                ingress=[
                    {
                        "from": [
                            {"namespaceSelector": expr(NSK, "NotIn", "x")},
                            {"podSelector": labels(pod="b")},
                        ]
                    }
                ],
            ),
        ),
        ("check", 80, "TCP", R().expect("x/a", "x/a", False).expect("x/c", "x/a", False)),
    ]
    s["podSelector and namespaceSelector"] = lambda R: [
        (
            "apply",
            np(
                "allow-ns-not-x-and-pod-b",
                "x",
                POD_A,
                ingress=[
                    {
                        "from": [
                            {
                                "namespaceSelector": expr(NSK, "NotIn", "x"),
                                "podSelector": labels(pod="b"),
                            }
                        ]
                    }
                ],
            ),
        ),
        (
            "check",
            80,
            "TCP",
            R().all_ingress("x/a", False).expect("y/b", "x/a", True).expect("z/b", "x/a", True),
        ),
    ]
    s["multiple podSelectors and namespaceSelectors"] = lambda R: [
        (
            "apply",
            np(
                "allow-ns-y-z-pod-b-c",
                "x",
                POD_A,
                ingress=[
                    {
                        "from": [
                            {
                                "namespaceSelector": expr(NSK, "NotIn", "x"),
                                "podSelector": expr("pod", "In", "b", "c"),
                            }
                        ]
                    }
                ],
            ),
        ),
        (
            "check",
            80,
            "TCP",
            R()
            .peer(("x", None), ("x", "a"), False)
            .expect("y/a", "x/a", False)
            .expect("z/a", "x/a", False),
        ),
    ]
    s["any podSelectors"] = lambda R: [
        (
            "apply",
            np(
                "allow-ns-x-pod-b-c",
                "x",
                POD_A,
                ingress=[
                    {"from": [{"podSelector": labels(pod="b")}, {"podSelector": labels(pod="c")}]}
                ],
            ),
        ),
        (
            "check",
            80,
            "TCP",
            R().all_ingress("x/a", False).expect("x/b", "x/a", True).expect("x/c", "x/a", True),
        ),
    ]
    s["only from a pod in a different namespace by podSelector and namespaceSelector"] = lambda R: [
        (
            "apply",
            np(
                "allow-y-a",
                "x",
                POD_A,
                ingress=[{"from": [{"namespaceSelector": ns_is("y"), "podSelector": POD_A}]}],
            ),
        ),
        ("check", 80, "TCP", R().all_ingress("x/a", False).expect("y/a", "x/a", True)),
    ]

    def port81_policy(
        name: str = "allow-client-a-via-ns-selector", port: int = 81, proto: str = "TCP"
    ) -> dict[str, Any]:
        rule = {
            "from": [{"namespaceSelector": ns_is("y")}],
            "ports": [{"port": port, "protocol": proto}],
        }
        return np(name, "x", POD_A, ingress=[rule])

    def ns_y_allowed(R: Any) -> Any:
        return (
            R()
            .peer(("x", None), ("x", "a"), False)
            .peer(("y", None), ("x", "a"), True)
            .peer(("z", None), ("x", "a"), False)
        )

    s["ports"] = lambda R: [("apply", port81_policy()), ("check", 81, "TCP", ns_y_allowed(R))]
    s["multiple stacked policies with overlapping podSelectors"] = lambda R: [
        ("apply", port81_policy()),
        ("check", 81, "TCP", ns_y_allowed(R)),
        ("check", 80, "TCP", R().all_ingress("x/a", False)),
        ("apply", port81_policy("allow-client-a-via-ns-selector-80", 80)),
        ("check", 80, "TCP", ns_y_allowed(R)),
    ]
    s["allow-all policy"] = lambda R: [
        ("apply", np("allow-all", "x", {}, ingress=[{}])),
        ("check", 80, "TCP", R()),
        ("check", 81, "TCP", R()),
    ]
    s["ingress access on one named port"] = lambda R: [
        ("apply", np("allow-all", "x", {}, ingress=[{"ports": [{"port": "serve-81-tcp"}]}])),
        ("check", 81, "TCP", R()),
        ("check", 80, "TCP", R().peer((None, None), ("x", None), False)),
    ]
    s["ingress access from namespace on one named port"] = lambda R: [
        (
            "apply",
            np(
                "allow-client-a-via-ns-selector-80",
                "x",
                POD_A,
                ingress=[
                    {
                        "from": [{"namespaceSelector": ns_is("y")}],
                        "ports": [{"port": "serve-80-tcp", "protocol": "TCP"}],
                    }
                ],
            ),
        ),
        (
            "check",
            80,
            "TCP",
            R().peer(("x", None), ("x", "a"), False).peer(("z", None), ("x", "a"), False),
        ),
        ("check", 81, "TCP", R().all_ingress("x/a", False)),
    ]
    s["egress access on one named port"] = lambda R: [
        ("apply", np("allow-egress", "x", {}, egress=[{"ports": [{"port": "serve-80-tcp"}]}])),
        ("check", 80, "TCP", R()),
        ("check", 81, "TCP", R().peer(("x", None), (None, None), False)),
    ]
    s["updated policy"] = lambda R: [
        ("apply", np("allow-all-mutate-to-deny-all", "x", {}, ingress=[{}])),
        ("check", 81, "TCP", R()),
        ("apply", np("allow-all-mutate-to-deny-all", "x", {}, ingress=[])),
        ("check", 81, "TCP", R().peer((None, None), ("x", None), False)),
    ]
    s["ingress access from updated namespace"] = lambda R: [
        (
            "apply",
            np(
                "allow-client-a-via-ns-selector",
                "x",
                POD_A,
                ingress=[{"from": [{"namespaceSelector": labels(ns2="updated")}]}],
            ),
        ),
        ("check", 80, "TCP", R().all_ingress("x/a", False)),
        ("ns_labels", "y", {"ns2": "updated"}),
        ("check", 80, "TCP", R().all_ingress("x/a", False).peer(("y", None), (None, None), True)),
    ]
    s["ingress access from updated pod"] = lambda R: [
        (
            "apply",
            np(
                "allow-client-a-via-pod-selector",
                "x",
                POD_A,
                ingress=[{"from": [{"podSelector": labels(pod="b", pod2="updated")}]}],
            ),
        ),
        ("check", 80, "TCP", R().all_ingress("x/a", False)),
        ("pod_labels", "x", "b", {"pod2": "updated"}),
        ("check", 80, "TCP", R().all_ingress("x/a", False).expect("x/b", "x/a", True)),
    ]
    s["deny ingress from pods on other namespaces"] = lambda R: [
        ("apply", np("deny-empty-policy", "x", {}, ingress=[{"from": [{"podSelector": {}}]}])),
        (
            "check",
            80,
            "TCP",
            R().peer(("y", None), ("x", None), False).peer(("z", None), ("x", None), False),
        ),
    ]
    s["deny ingress access to updated pod"] = lambda R: [
        (
            "apply",
            np("deny-ingress-via-label-selector", "x", labels(target="isolated"), ingress=[]),
        ),
        ("check", 80, "TCP", R()),
        ("pod_labels", "x", "a", {"target": "isolated"}),
        ("check", 80, "TCP", R().all_ingress("x/a", False)),
    ]
    s["deny egress from pods by podSelector"] = lambda R: [
        ("apply", np("deny-egress-pod-a", "x", POD_A, egress=[])),
        ("check", 80, "TCP", R().all_egress("x/a", False)),
    ]
    s["deny egress from all pods in a namespace"] = lambda R: [
        ("apply", np("deny-egress-ns-x", "x", {}, egress=[])),
        ("check", 80, "TCP", R().peer(("x", None), (None, None), False)),
    ]
    s["ingress and egress specified together"] = lambda R: [
        (
            "apply",
            np(
                "allow-client-a-via-pod-selector",
                "x",
                POD_A,
                ingress=[{"from": [{"podSelector": labels(pod="b")}]}],
                egress=[{"ports": [{"port": 80}]}],
                types=["Egress", "Ingress"],
            ),
        ),
        ("check", 80, "TCP", R().all_ingress("x/a", False).expect("x/b", "x/a", True)),
        (
            "check",
            81,
            "TCP",
            R().all_ingress("x/a", False).all_egress("x/a", False).expect("x/b", "x/a", True),
        ),
    ]

    def from_x_a() -> list[Any]:
        return [{"from": [{"namespaceSelector": ns_is("x"), "podSelector": POD_A}]}]

    s["deny egress on the client side even if the server allows it"] = lambda R: [
        (
            "apply",
            np(
                "allow-to-ns-y-pod-a",
                "x",
                POD_A,
                egress=[{"to": [{"namespaceSelector": ns_is("y"), "podSelector": POD_A}]}],
            ),
        ),
        ("apply", np("allow-from-xa-on-ya-match-selector", "y", POD_A, ingress=from_x_a())),
        (
            "apply",
            np("allow-from-xa-on-yb-match-selector", "y", labels(pod="b"), ingress=from_x_a()),
        ),
        (
            "check",
            80,
            "TCP",
            R()
            .peer(("x", "a"), (None, None), False)
            .peer((None, None), ("y", "a"), False)
            .peer(("x", "a"), ("y", "a"), True)
            .peer((None, None), ("y", "b"), False),
        ),
    ]
    s["egress to a server in another namespace by podSelector and namespaceSelector"] = lambda R: [
        (
            "apply",
            np(
                "allow-to-ns-y-pod-a",
                "x",
                POD_A,
                egress=[{"to": [{"namespaceSelector": ns_is("y"), "podSelector": POD_A}]}],
            ),
        ),
        ("check", 80, "TCP", R().all_egress("x/a", False).expect("x/a", "y/a", True)),
    ]
    s["ingress allowing any port on a specific protocol"] = lambda R: [
        (
            "apply",
            np("allow-ingress-by-proto", "x", POD_A, ingress=[{"ports": [{"protocol": "TCP"}]}]),
        ),
        ("check", 80, "TCP", R()),
        ("check", 80, "UDP", R().peer((None, None), ("x", "a"), False)),
    ]
    s["multiple ingress policies with allow-all taking precedence"] = lambda R: [
        ("apply", np("allow-ingress-port-80", "x", {}, ingress=[{"ports": [{"port": 80}]}])),
        ("check", 81, "TCP", R().peer((None, None), ("x", None), False)),
        ("apply", np("allow-ingress", "x", {}, ingress=[{}])),
        ("check", 81, "TCP", R()),
    ]
    s["multiple egress policies with allow-all taking precedence"] = lambda R: [
        ("apply", np("allow-egress-port-80", "x", {}, egress=[{"ports": [{"port": 80}]}])),
        ("check", 81, "TCP", R().peer(("x", None), (None, None), False)),
        ("apply", np("allow-egress", "x", {}, egress=[{}])),
        ("check", 81, "TCP", R()),
    ]
    s["stop enforcing policies after they are deleted"] = lambda R: [
        ("apply", np("deny-all", "x", {}, ingress=[], egress=[])),
        (
            "check",
            80,
            "TCP",
            R().peer(("x", None), (None, None), False).peer((None, None), ("x", None), False),
        ),
        ("delete", "x", "deny-all"),
        ("check", 80, "TCP", R()),
    ]
    s["ingress and egress controlled independently"] = lambda R: [
        ("apply", np("allow-egress-for-target", "x", POD_A, egress=[{}])),
        ("check", 80, "TCP", R()),
        ("apply", np("deny-ingress-via-label-selector", "x", POD_A, ingress=[])),
        ("check", 80, "TCP", R().all_ingress("x/a", False)),
    ]
    s["SCTP is not treated as TCP"] = lambda R: [
        ("apply", np("deny-ingress", "x", {}, ingress=[])),
        (
            "apply",
            np(
                "allow-only-sctp-ingress-on-port-81",
                "x",
                POD_A,
                ingress=[{"ports": [{"port": 81, "protocol": "SCTP"}]}],
            ),
        ),
        ("check", 81, "TCP", R().peer((None, None), ("x", None), False)),
    ]
    s["a policy allowing SCTP isolates the pod"] = lambda R: [
        (
            "apply",
            np(
                "allow-only-sctp-ingress-on-port-80",
                "x",
                POD_A,
                ingress=[{"ports": [{"port": 80, "protocol": "SCTP"}]}],
            ),
        ),
        ("check", 81, "TCP", R().all_ingress("x/a", False)),
    ]
    s["no TCP access when a policy specifies only UDP"] = lambda R: [
        (
            "apply",
            np(
                "allow-only-udp-ingress-on-port-81",
                "x",
                POD_A,
                ingress=[{"ports": [{"port": 81, "protocol": "UDP"}]}],
            ),
        ),
        ("check", 81, "TCP", R().all_ingress("x/a", False)),
    ]
    s["namespaceSelector matchLabels with the default namespace label"] = lambda R: [
        (
            "apply",
            np(
                "allow-client-a-via-ns-selector-for-immutable-ns-label",
                "x",
                POD_A,
                ingress=[{"from": [{"namespaceSelector": ns_is("y")}]}],
            ),
        ),
        (
            "check",
            80,
            "TCP",
            R().peer(("x", None), ("x", "a"), False).peer(("z", None), ("x", "a"), False),
        ),
    ]
    s["namespaceSelector matchExpressions with the default namespace label (egress)"] = lambda R: [
        (
            "apply",
            np(
                "allow-ns-not-y",
                "x",
                POD_A,
                egress=[{"to": [{"namespaceSelector": expr(NSK, "NotIn", "y")}]}],
            ),
        ),
        ("check", 80, "TCP", R().peer(("x", "a"), ("y", None), False)),
    ]
    for proto in ("UDP", "SCTP"):
        s[f"{proto}: default-deny-ingress"] = lambda R, p=proto: [
            ("apply", np("deny-all", "x", {}, ingress=[])),
            ("check", 80, p, R().peer((None, None), ("x", None), False)),
        ]
        s[f"{proto}: ports"] = lambda R, p=proto: [
            ("apply", port81_policy("allow-ingress-on-port-81-ns-x", 81, p)),
            (
                "check",
                81,
                p,
                R().peer(("x", None), ("x", "a"), False).peer(("z", None), ("x", "a"), False),
            ),
        ]
        s[f"{proto}: only from a pod in another namespace by podSelector and namespaceSelector"] = (
            lambda R, p=proto: [
                (
                    "apply",
                    np(
                        "allow-y-a",
                        "x",
                        POD_A,
                        ingress=[
                            {"from": [{"namespaceSelector": ns_is("y"), "podSelector": POD_A}]}
                        ],
                    ),
                ),
                ("check", 80, p, R().all_ingress("x/a", False).expect("y/a", "x/a", True)),
            ]
        )
    return s


SCENARIOS = _scenarios()


def _run(e2e: Any, steps: list[Step]) -> None:
    engine = e2e.build()
    for step in steps:
        op = step[0]
        if op == "apply":
            engine.upsert_policy(step[1])
        elif op == "delete":
            engine.delete_policy(PolicyKey("NetworkPolicy", step[1], step[2]))
        elif op == "ns_labels":
            engine.upsert_namespace(e2e.namespace(step[1], step[2]))
        elif op == "pod_labels":
            engine.upsert_pod(e2e.pod(step[1], step[2], step[3]))
        else:
            _, port, proto, reach = step
            bad = e2e.mismatches(engine, reach, port, proto)
            assert not bad, "\n".join(bad[:20]) + "\n" + e2e.matrix(engine, port, proto)
            fresh = engine.recompute_all()
            assert fresh == {n: engine.compiled[n] for n in fresh}


def test_scenario_count() -> None:
    # 42 upstream TCP scenarios minus the 3 ipBlock ones (elsewhere), plus 3 UDP and 3 SCTP.
    assert len(SCENARIOS) == 45


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_upstream_scenario(e2e: Any, name: str) -> None:
    _run(e2e, SCENARIOS[name](e2e.Reach))
