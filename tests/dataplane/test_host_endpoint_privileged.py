"""The host endpoint (host firewall) on a node interface: only the node's own traffic is
decided by the host policy; pod traffic routed through the interface passes untouched.

The sandbox's node namespace has pods behind veths and an uplink to an "outside"
namespace (203.0.113.10, standing for another node): the node's address on the uplink is
203.0.113.1, which the ipcache maps to the `host` identity as the agent does."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from septum.dataplane import netns
from septum.dataplane.abi import (
    IDENTITY_HOST,
    DropReason,
    TraceObservationPoint,
    TrafficDirection,
    Verdict,
)
from septum.dataplane.datapath import EndpointSpec, NodeDatapath
from septum.dataplane.errors import EndpointError
from septum.dataplane.events import Flow
from septum.dataplane.packets import tcp4, tcp6
from septum.dataplane.policy import EndpointPolicy, PolicyEntry
from septum.dataplane.sandbox import Sandbox, TcpServer, open_socket, tcp_connect

pytestmark = pytest.mark.privileged

INGRESS, EGRESS = TrafficDirection.INGRESS, TrafficDirection.EGRESS
TC_FORWARD, TC_DROP = 0, 2
TCP = 6
NODE_IP, PEER_IP, POD_IP = "203.0.113.1", "203.0.113.10", "10.96.0.3"
PEER_IDENTITY, POD_IDENTITY = 6, 2003  # remote-node, a pod
ALLOWED_PORT, DENIED_PORT = 8080, 9090
RULE = 41


@dataclass
class HostLab:
    node: NodeDatapath
    sandbox: Sandbox
    uplink: str
    outside: str
    servers: list[TcpServer]

    @property
    def ifindex(self) -> int:
        with netns.entered(self.sandbox.node_ns):
            return socket.if_nametoindex(self.uplink)

    def from_netdev(self, packet: bytes) -> int:
        return self.node.test_run("septum_from_netdev", packet, ifindex=self.ifindex).retval

    def to_netdev(self, packet: bytes) -> int:
        return self.node.test_run("septum_to_netdev", packet, ifindex=self.ifindex).retval


def ingress_policy() -> EndpointPolicy:
    """The node admits only PEER on ALLOWED_PORT (egress unenforced)."""
    return EndpointPolicy(
        enforce_ingress=True,
        entries=(PolicyEntry(INGRESS, PEER_IDENTITY, TCP, ALLOWED_PORT, rule_id=RULE),),
    )


@pytest.fixture
def lab(node: NodeDatapath, sandbox: Sandbox) -> Iterator[HostLab]:
    pod = sandbox.add_pod("s", POD_IP)
    uplink = f"{sandbox.prefix}up"
    outside = sandbox.add_outside("out", uplink, NODE_IP, [PEER_IP])
    node.upsert_endpoint(EndpointSpec(3, pod.host_interface, POD_IDENTITY, pod.ipv4))
    node.upsert_prefixes(
        {f"{NODE_IP}/32": IDENTITY_HOST, f"{PEER_IP}/32": PEER_IDENTITY, f"{POD_IP}/32": 2003}
    )
    servers = [
        TcpServer(sandbox.node_ns, NODE_IP, ALLOWED_PORT),
        TcpServer(sandbox.node_ns, NODE_IP, DENIED_PORT),
        TcpServer(pod.name, POD_IP, DENIED_PORT),
        TcpServer(outside, PEER_IP, DENIED_PORT),
    ]
    try:
        yield HostLab(node, sandbox, uplink, outside, servers)
    finally:
        for server in servers:
            server.close()


def drain(node: NodeDatapath) -> list[Flow]:
    return node.read_flows(timeout_s=0.2)


def connect_from_outside(lab: HostLab, address: str, port: int) -> bool:
    return tcp_connect(lab.outside, address, port, timeout_s=1.0)


# ---- BPF_PROG_TEST_RUN ------------------------------------------------------------------


def test_programs_pass_everything_while_no_host_endpoint_is_set(lab):
    assert lab.from_netdev(tcp4(PEER_IP, NODE_IP, 40000, DENIED_PORT)) == TC_FORWARD
    assert lab.to_netdev(tcp4(NODE_IP, PEER_IP, 40000, DENIED_PORT)) == TC_FORWARD
    assert drain(lab.node) == []


def test_only_the_nodes_own_packets_are_decided(lab):
    lab.node.set_host_endpoint([lab.uplink], policy=ingress_policy())
    drain(lab.node)  # nothing yet; start clean

    # forwarded pod traffic, both ways, on a port the host policy denies: not looked at
    assert lab.from_netdev(tcp4(PEER_IP, POD_IP, 40001, DENIED_PORT)) == TC_FORWARD
    assert lab.to_netdev(tcp4(POD_IP, PEER_IP, DENIED_PORT, 40001, flags=0x12)) == TC_FORWARD
    assert drain(lab.node) == []  # no event: the pod's hook reports it

    # addressed to the node: its policy decides
    assert lab.from_netdev(tcp4(PEER_IP, NODE_IP, 40002, ALLOWED_PORT)) == TC_FORWARD
    assert lab.from_netdev(tcp4(PEER_IP, NODE_IP, 40003, DENIED_PORT)) == TC_DROP
    flows = drain(lab.node)
    allowed = next(f for f in flows if f.dst_port == ALLOWED_PORT)
    denied = next(f for f in flows if f.dst_port == DENIED_PORT)
    assert (allowed.verdict, allowed.rule_id, allowed.direction) == (
        Verdict.FORWARDED,
        RULE,
        INGRESS,
    )
    assert (denied.verdict, denied.drop_reason) == (Verdict.DROPPED, DropReason.POLICY_DENIED)
    assert denied.trace_point == TraceObservationPoint.FROM_NETWORK
    assert (denied.src_identity, denied.dst_identity) == (PEER_IDENTITY, IDENTITY_HOST)

    # sent by the node: egress is unenforced, but tracked (TO_NETWORK)
    assert lab.to_netdev(tcp4(NODE_IP, PEER_IP, 40004, DENIED_PORT)) == TC_FORWARD
    (sent,) = drain(lab.node)
    assert (sent.direction, sent.trace_point) == (EGRESS, TraceObservationPoint.TO_NETWORK)
    assert (sent.src_identity, sent.dst_identity) == (IDENTITY_HOST, PEER_IDENTITY)
    # ... so its reply, arriving at the node, is a reply and not a denied new connection
    assert lab.from_netdev(tcp4(PEER_IP, NODE_IP, DENIED_PORT, 40004, flags=0x12)) == TC_FORWARD


def test_ipv6_addresses_of_the_node(lab):
    node6, peer6, pod6 = "fd00:113::1", "fd00:113::10", "fd00:96::3"
    lab.node.upsert_prefixes(
        {f"{node6}/128": IDENTITY_HOST, f"{peer6}/128": PEER_IDENTITY, f"{pod6}/128": 2003}
    )
    lab.node.set_host_endpoint([lab.uplink], policy=ingress_policy())
    assert lab.from_netdev(tcp6(peer6, node6, 40030, ALLOWED_PORT)) == TC_FORWARD
    assert lab.from_netdev(tcp6(peer6, node6, 40031, DENIED_PORT)) == TC_DROP
    assert lab.from_netdev(tcp6(peer6, pod6, 40032, DENIED_PORT)) == TC_FORWARD
    assert lab.to_netdev(tcp6(node6, peer6, 40033, DENIED_PORT)) == TC_FORWARD


def test_egress_policy_and_audit_mode(lab):
    egress_only = EndpointPolicy(
        enforce_egress=True,
        entries=(PolicyEntry(EGRESS, PEER_IDENTITY, TCP, ALLOWED_PORT, rule_id=RULE),),
    )
    lab.node.set_host_endpoint([lab.uplink], policy=egress_only)
    assert lab.to_netdev(tcp4(NODE_IP, PEER_IP, 40010, ALLOWED_PORT)) == TC_FORWARD
    assert lab.to_netdev(tcp4(NODE_IP, PEER_IP, 40011, DENIED_PORT)) == TC_DROP
    # ingress is not selected: the node accepts anything
    assert lab.from_netdev(tcp4(PEER_IP, NODE_IP, 40012, DENIED_PORT)) == TC_FORWARD

    lab.node.set_host_audit(True)
    drain(lab.node)
    assert lab.to_netdev(tcp4(NODE_IP, PEER_IP, 40013, DENIED_PORT)) == TC_FORWARD
    (audited,) = drain(lab.node)
    assert (audited.verdict, audited.drop_reason) == (Verdict.AUDIT, DropReason.POLICY_DENIED)
    info = lab.node.host_endpoint()
    assert info is not None and info.audit and info.interfaces == (lab.uplink,)


def test_replacing_the_policy_and_removing_the_host_endpoint(lab):
    lab.node.set_host_endpoint([lab.uplink], policy=ingress_policy())
    assert lab.from_netdev(tcp4(PEER_IP, NODE_IP, 40020, DENIED_PORT)) == TC_DROP
    change = lab.node.set_host_endpoint([lab.uplink])  # unenforced: off, still tracking
    assert not change.empty
    assert lab.from_netdev(tcp4(PEER_IP, NODE_IP, 40021, DENIED_PORT)) == TC_FORWARD
    lab.node.set_host_endpoint([lab.uplink], policy=ingress_policy())
    lab.node.remove_host_endpoint()
    assert lab.node.host_endpoint() is None
    assert lab.from_netdev(tcp4(PEER_IP, NODE_IP, 40022, DENIED_PORT)) == TC_FORWARD
    lab.node.remove_host_endpoint()  # idempotent


def test_invalid_arguments_name_the_field(lab):
    with pytest.raises(EndpointError, match="interfaces"):
        lab.node.set_host_endpoint([])
    with pytest.raises(EndpointError, match="identity"):
        lab.node.set_host_endpoint([lab.uplink], identity=0)
    with pytest.raises(EndpointError, match="not found"):
        lab.node.set_host_endpoint(["no-such-if0"])
    with pytest.raises(EndpointError, match="host endpoint"):
        lab.node.set_host_audit(True)


# ---- real packets -----------------------------------------------------------------------


def test_real_traffic_to_the_node_and_through_it(lab):
    # tracked before the policy: a connection of the node's opened while no host policy
    # was enforced survives the policy (as a pod's does: keep, Cilium's default)
    lab.node.set_host_endpoint([lab.uplink])
    early = open_socket(lab.outside, socket.AF_INET, socket.SOCK_STREAM)
    early.settimeout(2.0)
    try:
        early.connect((NODE_IP, DENIED_PORT))
        lab.node.set_host_endpoint([lab.uplink], policy=ingress_policy())

        assert connect_from_outside(lab, NODE_IP, ALLOWED_PORT)
        assert not connect_from_outside(lab, NODE_IP, DENIED_PORT)
        early.sendall(b"still")
        assert early.recv(5) == b"still"
    finally:
        early.close()
    # through the node to its pod, on the port the host denies: the pod's business
    assert connect_from_outside(lab, POD_IP, DENIED_PORT)
    # the node's own connections out (egress unenforced) and their replies
    assert tcp_connect(lab.sandbox.node_ns, PEER_IP, DENIED_PORT, timeout_s=1.0)
    # and the pod's connections out through the uplink
    assert tcp_connect(lab.sandbox.pods["s"].name, PEER_IP, DENIED_PORT, timeout_s=1.0)

    denied = [f for f in drain(lab.node) if f.verdict == Verdict.DROPPED]
    assert denied and all(
        (f.dst_ip, f.dst_port, f.drop_reason) == (NODE_IP, DENIED_PORT, DropReason.POLICY_DENIED)
        for f in denied
    )

    lab.node.remove_host_endpoint()
    assert connect_from_outside(lab, NODE_IP, DENIED_PORT)
