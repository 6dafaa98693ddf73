"""Fixtures for the engine tests: the upstream e2e cluster model and a reachability matrix.

The model is the one of the Kubernetes network-policy e2e tests: namespaces
x, y, z; pods a, b, c in each; servers on ports 80 and 81 over TCP, UDP and
SCTP with named ports `serve-<port>-<proto>`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from septum.operator.engine.cluster import PodKey
from septum.operator.engine.explain import explain
from septum.operator.engine.ports import parse_protocol_name
from septum.operator.engine.rules import Direction
from septum.operator.engine.state import Engine

NAMESPACES = ("x", "y", "z")
PODS = ("a", "b", "c")
ALL = [f"{ns}/{pod}" for ns in NAMESPACES for pod in PODS]


class NoNodes:
    """A cluster without nodes (matching.NodeView), for selector caches built alone."""

    def node_matches(self, selector: Any) -> bool:
        return False

    def node_addresses(self, name: str) -> tuple[Any, ...]:
        return ()

    def fqdn_names(self, network: Any) -> frozenset[str]:
        return frozenset()


def namespace_obj(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": {"ns": name, **(labels or {})}}}


def pod_obj(namespace: str, name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    ns_index = NAMESPACES.index(namespace) if namespace in NAMESPACES else 9
    pod_index = PODS.index(name) if name in PODS else 9
    ports = [
        {"name": f"serve-{port}-{proto.lower()}", "containerPort": port, "protocol": proto}
        for port in (80, 81)
        for proto in ("TCP", "UDP", "SCTP")
    ]
    return {
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"pod": name, **(labels or {})},
        },
        "spec": {"containers": [{"name": "cont", "ports": ports}], "nodeName": "node-1"},
        "status": {"podIP": f"10.{ns_index}.{pod_index}.10"},
    }


def build_engine(policies: list[dict[str, Any]] | None = None) -> Engine:
    engine = Engine()
    engine.load(
        namespaces=[namespace_obj(ns) for ns in NAMESPACES],
        pods=[pod_obj(ns, pod) for ns in NAMESPACES for pod in PODS],
        policies=policies or [],
    )
    return engine


@dataclass
class Reach:
    """An expected 9x9 reachability matrix (source -> destination)."""

    default: bool = True
    cells: dict[tuple[str, str], bool] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for src, dst in itertools.product(ALL, ALL):
            self.cells[(src, dst)] = self.default

    @staticmethod
    def _hits(pod: str, ns: str | None, name: str | None) -> bool:
        pod_ns, pod_name = pod.split("/")
        return (ns is None or ns == pod_ns) and (name is None or name == pod_name)

    def peer(
        self, src: tuple[str | None, str | None], dst: tuple[str | None, str | None], value: bool
    ) -> Reach:
        for a, b in self.cells:
            if self._hits(a, *src) and self._hits(b, *dst):
                self.cells[(a, b)] = value
        return self

    def expect(self, src: str, dst: str, value: bool) -> Reach:
        self.cells[(src, dst)] = value
        return self

    def all_ingress(self, dst: str, value: bool) -> Reach:
        return self.peer((None, None), tuple(dst.split("/")), value)  # type: ignore[arg-type]

    def all_egress(self, src: str, value: bool) -> Reach:
        return self.peer(tuple(src.split("/")), (None, None), value)  # type: ignore[arg-type]


def entries_allow(engine: Engine, src: str, dst: str, port: int, protocol: int) -> bool:
    """The verdict the datapath would reach from the compiled entries."""
    s_ns, s_name = src.split("/")
    d_ns, d_name = dst.split("/")
    s_key, d_key = PodKey(s_ns, s_name), PodKey(d_ns, d_name)
    s_id, d_id = engine.pod_identity[s_key], engine.pod_identity[d_key]
    egress = engine.endpoint_policy(s_key).egress.lookup(d_id, protocol, port)
    ingress = engine.endpoint_policy(d_key).ingress.lookup(s_id, protocol, port)
    return all(e is None or e.verdict.value == "allow" for e in (egress, ingress))


def mismatches(engine: Engine, reach: Reach, port: int, protocol: str) -> list[str]:
    proto = parse_protocol_name(protocol)
    found = []
    for (src, dst), expected in sorted(reach.cells.items()):
        by_explain = explain(engine, src, dst, port, proto).allowed
        by_entries = entries_allow(engine, src, dst, port, proto)
        if by_explain != expected or by_entries != expected:
            found.append(
                f"{src}->{dst} {protocol}/{port}: expected {expected}, "
                f"explain {by_explain}, entries {by_entries}"
            )
    return found


def matrix_text(engine: Engine, port: int, protocol: str) -> str:
    proto = parse_protocol_name(protocol)
    rows = ["    " + " ".join(p.replace("/", "") for p in ALL)]
    for src in ALL:
        rows.append(
            src.replace("/", "")
            + "  "
            + "  ".join("." if explain(engine, src, d, port, proto).allowed else "X" for d in ALL)
        )
    return "\n".join(rows)


@pytest.fixture
def e2e() -> Iterator[Any]:
    class Kit:
        Reach = Reach
        build = staticmethod(build_engine)
        pod = staticmethod(pod_obj)
        namespace = staticmethod(namespace_obj)
        mismatches = staticmethod(mismatches)
        matrix = staticmethod(matrix_text)
        INGRESS = Direction.INGRESS

    yield Kit


Check = Callable[[Engine], None]
