"""Local delivery: a connection between two pods of one node skips the node's IP stack
(bpf/lib/localdelivery.h), with every decision and event as before, and a connection the
node's stack translated keeps the stack both ways.

The node's iptables FORWARD chain counts what the stack forwards between the pods: zero
packets for a locally delivered connection."""

from __future__ import annotations

import asyncio
import ctypes
import ipaddress
import socket
import subprocess
import threading
from collections.abc import Iterator

import pytest

from septum.dataplane import abi, netns
from septum.dataplane.abi import TraceObservationPoint, TrafficDirection, Verdict
from septum.dataplane.config import DatapathConfig
from septum.dataplane.datapath import EndpointSpec, NodeDatapath
from septum.dataplane.localaddrs import LocalAddresses
from septum.dataplane.policy import EndpointPolicy, PolicyEntry
from septum.dataplane.sandbox import (
    Pod,
    Sandbox,
    TcpServer,
    echo,
    ping,
    tcp_connect,
    tcp_connection,
)

from .test_traffic_privileged import collect_until, interface_mac

pytestmark = pytest.mark.privileged

CLIENT_ID, SERVER_ID = 3101, 3102
SERVICE_IP, SERVICE_PORT = "10.97.0.10", 80  # a kube-proxy-like DNAT to the server
UDP_TTL_PORT = 7070
IP_RECVTTL = 12


class Pair:
    """A client and a server pod on one node, both endpoints, with a FORWARD counter."""

    def __init__(self, node: NodeDatapath, sandbox: Sandbox) -> None:
        self.node = node
        self.sandbox = sandbox
        self.client = sandbox.add_pod("c", "10.97.1.1", "fd00:97::1")
        self.server = sandbox.add_pod("s", "10.97.1.2", "fd00:97::2")
        for endpoint_id, pod, identity in (
            (1, self.client, CLIENT_ID),
            (2, self.server, SERVER_ID),
        ):
            node.upsert_endpoint(
                EndpointSpec(endpoint_id, pod.host_interface, identity, pod.ipv4, pod.ipv6)
            )
        node.upsert_prefixes(
            {
                f"{self.client.ipv4}/32": CLIENT_ID,
                f"{self.client.ipv6}/128": CLIENT_ID,
                f"{self.server.ipv4}/32": SERVER_ID,
                f"{self.server.ipv6}/128": SERVER_ID,
            }
        )
        self.http = TcpServer(self.server.name, "::", 8080)
        # kube-proxy's rule: a packet netfilter cannot place in a connection it saw is
        # dropped, so a connection half delivered and half through the stack breaks
        self._iptables("-A", "FORWARD", "-m", "conntrack", "--ctstate", "INVALID", "-j", "DROP")
        self._iptables("-A", "FORWARD", "-s", self.client.ipv4, "-d", self.server.ipv4)
        self._iptables("-A", "FORWARD", "-s", self.server.ipv4, "-d", self.client.ipv4)
        # the node learns both pods' Ethernet addresses (through its stack)
        assert ping(self.client.name, self.server.ipv4)

    def _iptables(self, *args: str, table: str = "filter") -> str:
        done = subprocess.run(
            ["ip", "netns", "exec", self.sandbox.node_ns, "iptables", "-w", "-t", table, *args],
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout

    def forwarded_by_stack(self) -> int:
        """Packets the node's FORWARD chain saw between the pods (both ways)."""
        listing = self._iptables("-L", "FORWARD", "-v", "-x", "-n")
        total = 0
        for line in listing.splitlines():
            fields = line.split()
            pods = {self.client.ipv4, self.server.ipv4}
            if len(fields) >= 8 and {fields[-2], fields[-1]} == pods:
                total += int(fields[0])
        return total

    def add_service_dnat(self) -> None:
        """What kube-proxy does for a ClusterIP: DNAT in the node's PREROUTING."""
        self._iptables(
            "-A", "PREROUTING", "-d", SERVICE_IP, "-p", "tcp", "--dport", str(SERVICE_PORT),
            "-j", "DNAT", "--to-destination", f"{self.server.ipv4}:8080", table="nat",
        )  # fmt: skip

    def entries_of(self, pod: Pod, peer: Pod) -> list[abi.CtEntry]:
        """The TCP conntrack entries in `pod`'s scope whose other side is `peer`."""
        found = []
        for key, entry in self.node.conntrack():
            addresses = {
                _address(key.src_addr, key.ip_version),
                _address(key.dst_addr, key.ip_version),
            }
            if (key.ifindex, key.protocol) == (pod.ifindex, socket.IPPROTO_TCP) and addresses == {
                pod.ipv4,
                peer.ipv4,
            }:
                found.append(entry)
        return found

    def close(self) -> None:
        self.http.close()


def _address(raw: object, version: int) -> str:
    data = bytes(raw)  # type: ignore[call-overload]
    if version == abi.IPVersion.V4:
        return str(ipaddress.IPv4Address(data[:4]))
    return str(ipaddress.IPv6Address(data))


@pytest.fixture
def pair(node: NodeDatapath, sandbox: Sandbox) -> Iterator[Pair]:
    p = Pair(node, sandbox)
    try:
        yield p
    finally:
        p.close()


@pytest.fixture
def legacy_node(node_name: str, sandbox: Sandbox) -> Iterator[NodeDatapath]:
    datapath = NodeDatapath(
        DatapathConfig(node_name=node_name, netns=sandbox.node_ns, host_legacy_routing=True)
    )
    try:
        yield datapath
    finally:
        datapath.teardown()


def _assert_both_entries(pair: Pair, *, local: bool) -> None:
    """The connection's one TCP entry in each pod's scope is (or is not) marked local."""
    for pod, peer in ((pair.client, pair.server), (pair.server, pair.client)):
        (entry,) = pair.entries_of(pod, peer)
        assert bool(entry.flags & abi.CtFlag.LOCAL) is local


def _connection_flows(pair: Pair) -> tuple[list, list]:
    """Open a TCP connection client -> server, exchange data, close it; the events of the
    client's egress and of the server's ingress hook."""
    pair.node.read_flows()  # the warm-up's events
    with tcp_connection(pair.client.name, pair.server.ipv4, 8080) as sock:
        assert echo(sock, b"hello")
    flows = collect_until(
        pair.node,
        lambda seen: any(
            f.flags & abi.EVENT_F_CT_CLOSE for f in seen if f.ifindex == pair.server.ifindex
        ),
    )
    client = [f for f in flows if f.ifindex == pair.client.ifindex]
    server = [f for f in flows if f.ifindex == pair.server.ifindex]
    return client, server


def test_a_connection_between_two_pods_of_the_node_skips_its_stack(pair: Pair) -> None:
    before = pair.forwarded_by_stack()
    client, server = _connection_flows(pair)

    assert pair.forwarded_by_stack() == before, "the node's FORWARD chain saw the connection"
    # every decision and event as through the stack: the source's egress hook decides
    # the SYN, then the destination's ingress hook, on its own interface and conntrack
    # scope; the replies pass the server's egress and the client's ingress hook
    assert (client[0].event_type, client[0].trace_point, client[0].direction) == (
        abi.EventType.POLICY_VERDICT, TraceObservationPoint.FROM_ENDPOINT, TrafficDirection.EGRESS
    )  # fmt: skip
    verdict = server[0]
    assert (verdict.event_type, verdict.trace_point, verdict.direction) == (
        abi.EventType.POLICY_VERDICT, TraceObservationPoint.TO_ENDPOINT, TrafficDirection.INGRESS
    )  # fmt: skip
    assert (verdict.src_ip, verdict.dst_ip, verdict.dst_port) == (
        pair.client.ipv4, pair.server.ipv4, 8080,
    )  # fmt: skip
    replies = {(f.ifindex, f.trace_point) for f in client + server if f.is_reply}
    assert replies == {
        (pair.server.ifindex, TraceObservationPoint.FROM_ENDPOINT),
        (pair.client.ifindex, TraceObservationPoint.TO_ENDPOINT),
    }
    assert all(f.verdict == Verdict.FORWARDED for f in client + server)
    for pod, peer in ((pair.client, pair.server), (pair.server, pair.client)):
        (entry,) = pair.entries_of(pod, peer)
        assert entry.flags & abi.CtFlag.LOCAL
        assert entry.flags & abi.CtFlag.REPLY_SEEN


def test_a_bulk_transfer_is_delivered_too(pair: Pair) -> None:
    """A sender's segments travel as GSO packets longer than the MTU: delivered as one,
    not handed to the stack (which would see the data but not the handshake)."""
    payload = bytes(range(256)) * 16384  # 4 MiB
    received = bytearray()
    before = pair.forwarded_by_stack()
    with tcp_connection(pair.client.name, pair.server.ipv4, 8080, timeout_s=20) as sock:

        def read_back() -> None:
            while len(received) < len(payload) and (chunk := sock.recv(1 << 16)):
                received.extend(chunk)

        reader = threading.Thread(target=read_back)
        reader.start()
        sock.sendall(payload)
        reader.join(timeout=20)
    assert bytes(received) == payload
    assert pair.forwarded_by_stack() == before


def test_the_delivered_packet_is_forwarded_as_the_node_would_route_it(pair: Pair) -> None:
    """TTL one less (its IPv4 checksum right, or the pod would drop it), the pod's own
    Ethernet address as destination: a UDP server reads the TTL it received."""
    with netns.entered(pair.server.name):
        server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with netns.entered(pair.client.name):
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        server.setsockopt(socket.IPPROTO_IP, IP_RECVTTL, 1)
        server.bind((pair.server.ipv4, UDP_TTL_PORT))
        server.settimeout(5)
        before = pair.forwarded_by_stack()
        client.sendto(b"ttl?", (pair.server.ipv4, UDP_TTL_PORT))
        data, ancillary, _, _ = server.recvmsg(64, socket.CMSG_SPACE(4))
        assert data == b"ttl?"
        ((level, kind, raw),) = ancillary
        assert (level, kind) == (socket.IPPROTO_IP, socket.IP_TTL)
        assert int.from_bytes(raw[:4], "little") == 63
        assert pair.forwarded_by_stack() == before
    finally:
        server.close()
        client.close()


def test_ipv6_between_two_pods_is_delivered_too(pair: Pair) -> None:
    assert pair.client.ipv6 and pair.server.ipv6
    assert ping(pair.client.name, pair.server.ipv6)  # the node resolves the neighbour
    assert tcp_connect(pair.client.name, pair.server.ipv6, 8080)
    assert tcp_connect(pair.client.name, pair.server.ipv6, 8080)
    local = [
        entry
        for key, entry in pair.node.conntrack()
        if key.ip_version == abi.IPVersion.V6 and key.ifindex == pair.server.ifindex
        and key.protocol == socket.IPPROTO_TCP
    ]  # fmt: skip
    assert local and all(entry.flags & abi.CtFlag.LOCAL for entry in local)


def test_the_destinations_policy_still_decides(pair: Pair) -> None:
    pair.node.replace_policy(
        2,
        EndpointPolicy(
            enforce_ingress=True,
            entries=(PolicyEntry(TrafficDirection.INGRESS, CLIENT_ID, 6, 9999),),
        ),
    )
    pair.node.read_flows()
    assert not tcp_connect(pair.client.name, pair.server.ipv4, 8080, timeout_s=1)
    drops = collect_until(pair.node, lambda seen: any(f.verdict == Verdict.DROPPED for f in seen))
    drop = next(f for f in drops if f.verdict == Verdict.DROPPED)
    assert (drop.ifindex, drop.trace_point) == (
        pair.server.ifindex, TraceObservationPoint.TO_ENDPOINT,
    )  # fmt: skip
    assert drop.drop_reason == abi.DropReason.POLICY_DENIED


def test_a_connection_the_node_translated_keeps_the_stack_both_ways(pair: Pair) -> None:
    """kube-proxy's ClusterIP: the reply must go back through the stack to be un-DNATed."""
    pair.add_service_dnat()
    before = pair.forwarded_by_stack()
    with tcp_connection(pair.client.name, SERVICE_IP, SERVICE_PORT) as sock:
        assert echo(sock, b"through the service")
    assert pair.forwarded_by_stack() > before
    (entry,) = pair.entries_of(pair.server, pair.client)
    assert not entry.flags & abi.CtFlag.LOCAL


def _flush_neighbours(pair: Pair, pod: Pod) -> None:
    subprocess.run(
        ["ip", "-n", pair.sandbox.node_ns, "neigh", "flush", "dev", pod.host_interface],
        check=True,
    )


def test_a_pod_the_node_has_not_resolved_yet_is_reached_through_the_stack_first(
    pair: Pair,
) -> None:
    """A new connection to a pod whose neighbour the node lacks goes through the stack,
    whole (both entries unmarked), which resolves it; the next one is delivered."""
    _flush_neighbours(pair, pair.server)
    before = pair.forwarded_by_stack()
    assert tcp_connect(pair.client.name, pair.server.ipv4, 8080)
    assert pair.forwarded_by_stack() > before
    _assert_both_entries(pair, local=False)
    after_first = pair.forwarded_by_stack()
    assert tcp_connect(pair.client.name, pair.server.ipv4, 8080)
    assert pair.forwarded_by_stack() == after_first
    assert any(e.flags & abi.CtFlag.LOCAL for e in pair.entries_of(pair.server, pair.client))


def test_a_connection_survives_its_neighbours_expiring(pair: Pair) -> None:
    """Delivered traffic never refreshes the node's neighbour entries, so they may go;
    the connection's packets keep their way (never half through netfilter), resolved out
    of the destination's veth, and the destination's hook decides each once."""
    before = pair.forwarded_by_stack()
    with tcp_connection(pair.client.name, pair.server.ipv4, 8080) as sock:
        assert echo(sock, b"one")
        (server_entry,) = pair.entries_of(pair.server, pair.client)
        counted = server_entry.fwd_packets
        _flush_neighbours(pair, pair.server)
        _flush_neighbours(pair, pair.client)
        assert echo(sock, b"two")
        assert echo(sock, b"three")
        (server_entry,) = pair.entries_of(pair.server, pair.client)
        # two data segments and their ACKs at most, never each twice
        assert 2 <= server_entry.fwd_packets - counted <= 4
    assert pair.forwarded_by_stack() == before


def test_an_icmp_error_about_a_delivered_connection_is_delivered(pair: Pair) -> None:
    """Port unreachable for a UDP datagram: through the stack it would be INVALID (netfilter
    never saw the datagram) and dropped; the client must see the refusal."""
    with netns.entered(pair.client.name):
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        client.settimeout(3)
        client.connect((pair.server.ipv4, 9))  # nothing listens
        client.send(b"anyone?")
        with pytest.raises(ConnectionRefusedError):
            client.recv(16)
    finally:
        client.close()


def test_a_connection_that_began_through_the_stack_moves_over_whole(pair: Pair) -> None:
    """The client's entry is lost (LRU) while the server's, made through the stack,
    remains: the client's next packet is delivered locally, so the server's replies
    must be too (its entry adopts the mark)."""
    config = pair.node.config_map.lookup(ctypes.c_uint32(0))
    assert config is not None
    legacy = abi.Config.from_buffer_copy(config)
    legacy.flags &= ~abi.CFG_F_LOCAL_DELIVERY
    pair.node.write_config(legacy)
    with tcp_connection(pair.client.name, pair.server.ipv4, 8080) as sock:
        assert echo(sock, b"through the stack")
        (server_entry,) = pair.entries_of(pair.server, pair.client)
        assert not server_entry.flags & abi.CtFlag.LOCAL
        pair.node.write_config(config)
        scope = pair.client.ifindex | socket.IPPROTO_TCP << abi.CT4_IFINDEX_BITS
        lost = [k for k, _ in pair.node.conntrack4_map.items() if k.ifindex_protocol == scope]
        assert lost
        for key in lost:
            pair.node.conntrack4_map.delete(key)
        assert echo(sock, b"now delivered")
        assert echo(sock, b"both ways")
        (server_entry,) = pair.entries_of(pair.server, pair.client)
        assert server_entry.flags & abi.CtFlag.LOCAL


def test_legacy_host_routing_keeps_the_nodes_stack(
    legacy_node: NodeDatapath, sandbox: Sandbox
) -> None:
    pair = Pair(legacy_node, sandbox)
    try:
        config = legacy_node.config_map.lookup(ctypes.c_uint32(0))
        assert config is not None and not config.flags & abi.CFG_F_LOCAL_DELIVERY
        before = pair.forwarded_by_stack()
        assert tcp_connect(pair.client.name, pair.server.ipv4, 8080)
        assert pair.forwarded_by_stack() > before
        _assert_both_entries(pair, local=False)
    finally:
        pair.close()


def test_a_removed_pod_takes_its_addresses_out_of_local_delivery(pair: Pair) -> None:
    addresses = {bytes(key.addr): value.ifindex for key, value in pair.node.local_addrs_map.items()}
    assert socket.inet_pton(socket.AF_INET, pair.server.ipv4) + bytes(12) in addresses
    pair.node.remove_endpoint(2)
    left = [value.ifindex for _, value in pair.node.local_addrs_map.items()]
    assert pair.server.ifindex not in left and pair.client.ifindex in left


def test_an_address_another_pod_took_over_stays_with_it(node: NodeDatapath) -> None:
    """A pod's address reused by a new pod while the old one is still registered: removing
    the old one must not take the address from the new one."""
    addresses = LocalAddresses(
        node.local_addrs_map, lambda ifindex: bytes([2, 0, 0, 0, 0, ifindex])
    )
    addresses.publish(100, ["10.97.9.9"])
    addresses.publish(200, ["10.97.9.9"])  # reused by the new pod
    addresses.publish(100, ["10.97.9.9", "fd00:97::9"])  # the old pod republished last
    addresses.forget(100)
    left = {bytes(key.addr): value.ifindex for key, value in node.local_addrs_map.items()}
    assert left == {socket.inet_aton("10.97.9.9") + bytes(12): 200}
    ((_, value),) = node.local_addrs_map.items()
    assert bytes(value.mac) == bytes([2, 0, 0, 0, 0, 200])


def test_a_pod_registered_from_an_event_loop_gets_its_veths_address(
    node: NodeDatapath, sandbox: Sandbox
) -> None:
    """The agent registers pods from its asyncio loop (where pyroute2's own loop cannot
    run): the host veth's Ethernet address is read there all the same."""
    pod = sandbox.add_pod("e", "10.97.2.1")

    async def register() -> None:
        node.upsert_endpoint(EndpointSpec(7, pod.host_interface, CLIENT_ID, pod.ipv4))

    asyncio.run(register())
    ((key, value),) = node.local_addrs_map.items()
    assert bytes(key.addr)[:4] == socket.inet_aton(pod.ipv4)
    assert value.ifindex == pod.ifindex
    expected = interface_mac(sandbox.node_ns, pod.host_interface)
    assert bytes(value.mac) == bytes.fromhex(expected.replace(":", ""))
