"""The agent's host firewall: the engine's host endpoint for this node, translated and
written when it changes (a recording stand-in for the datapath)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from septum.agent.compiler import Compiler
from septum.agent.hostendpoints import HostFirewall, NodeInterface, host_prefixes
from septum.dataplane.abi import IDENTITY_HOST, PolicyAction, TrafficDirection
from septum.dataplane.policy import EndpointPolicy

NODE = "n1"
REMOTE_NODE = 6


def node(name: str, ip: str, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": labels},
        "status": {"addresses": [{"type": "InternalIP", "address": ip}]},
    }


def host_policy(name: str, role: str, port: int) -> dict[str, Any]:
    return {
        "apiVersion": "septum.io/v2",
        "kind": "SeptumClusterwideNetworkPolicy",
        "metadata": {"name": name, "generation": 1},
        "spec": {
            "nodeSelector": {"matchLabels": {"role": role}},
            "ingress": [
                {
                    "fromEntities": ["remote-node"],
                    "toPorts": [{"ports": [{"port": str(port), "protocol": "TCP"}]}],
                }
            ],
        },
    }


@dataclass
class Value:
    endpoint_id: int


@dataclass
class FakeMap:
    values: list[Value] = field(default_factory=list)

    def items(self) -> list[tuple[int, Value]]:
        return list(enumerate(self.values))


@dataclass
class FakeDatapath:
    endpoints_map: FakeMap = field(default_factory=FakeMap)
    prefixes: dict[str, int] = field(default_factory=dict)
    writes: list[tuple[list[str], int, EndpointPolicy]] = field(default_factory=list)
    audit: list[bool] = field(default_factory=list)

    def upsert_prefixes(self, prefixes: dict[str, int]) -> None:
        self.prefixes.update(prefixes)

    def set_host_endpoint(self, names: list[str], identity: int, policy: EndpointPolicy) -> None:
        self.writes.append((names, identity, policy))

    def set_host_audit(self, enabled: bool) -> None:
        self.audit.append(enabled)


UPLINK = NodeInterface("eth0", ("192.168.1.1", "fd00::1"))


def loaded_compiler(*objs: tuple[str, dict[str, Any]]) -> Compiler:
    compiler = Compiler(NODE)
    compiler.apply("Node", "upsert", node(NODE, "192.168.1.1", {"role": "edge"}))
    compiler.apply("Node", "upsert", node("n2", "192.168.1.2", {"role": "core"}))
    for kind, obj in objs:
        compiler.apply(kind, "upsert", obj)
    compiler.load()
    compiler.take()
    return compiler


def test_host_prefixes_are_the_interfaces_addresses_as_host() -> None:
    assert host_prefixes([UPLINK]) == {
        "192.168.1.1/32": IDENTITY_HOST,
        "fd00::1/128": IDENTITY_HOST,
    }


def test_start_attaches_unenforced_and_maps_the_addresses() -> None:
    datapath = FakeDatapath()
    firewall = HostFirewall(datapath, [UPLINK], audit=True)  # type: ignore[arg-type]
    firewall.start()
    assert datapath.prefixes == host_prefixes([UPLINK])
    ((names, identity, policy),) = datapath.writes
    assert (names, identity) == (["eth0"], IDENTITY_HOST)
    assert not policy.enforce_ingress and not policy.enforce_egress and not policy.entries
    assert datapath.audit == [True]


def test_start_leaves_an_earlier_agents_host_endpoint_enforcing() -> None:
    datapath = FakeDatapath(FakeMap([Value(7), Value(0)]))
    HostFirewall(datapath, [UPLINK]).start()  # type: ignore[arg-type]
    assert datapath.writes == []


def test_the_nodes_host_policy_is_written_when_it_changes() -> None:
    compiler = loaded_compiler()
    datapath = FakeDatapath()
    firewall = HostFirewall(datapath, [UPLINK])  # type: ignore[arg-type]
    firewall.start()
    assert not firewall.realize(compiler)  # no host policy: stays unenforced, no write

    compiler.apply("SeptumClusterwideNetworkPolicy", "upsert", host_policy("edge", "edge", 8080))
    assert firewall.realize(compiler)
    policy = datapath.writes[-1][2]
    assert policy.enforce_ingress and not policy.enforce_egress and policy.resolved
    allows = [
        e
        for e in policy.entries
        if e.action == PolicyAction.ALLOW and e.direction == TrafficDirection.INGRESS
    ]
    assert [e.port_range or (e.port, e.port) for e in allows] == [(8080, 8080)]
    assert [e.peer_identity for e in allows] == [REMOTE_NODE]
    assert not firewall.realize(compiler)  # unchanged: nothing written

    # a host policy for another node does not touch this one; deleting ours opens it again
    compiler.apply("SeptumClusterwideNetworkPolicy", "upsert", host_policy("core", "core", 22))
    assert not firewall.realize(compiler)
    compiler.apply("SeptumClusterwideNetworkPolicy", "delete", host_policy("edge", "edge", 8080))
    assert firewall.realize(compiler)
    assert not datapath.writes[-1][2].enforce_ingress
