"""Real traffic between pods (network namespaces) through the attached datapath."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator

import pytest
from pyroute2 import IPRoute

from septum.dataplane import netns
from septum.dataplane.abi import (
    DropReason,
    EventType,
    IPVersion,
    MatchType,
    PolicyAction,
    TcpFlag,
    TraceObservationPoint,
    TrafficDirection,
    Verdict,
)
from septum.dataplane.datapath import EndpointSpec, NodeDatapath
from septum.dataplane.events import Flow
from septum.dataplane.policy import EndpointPolicy, PolicyEntry
from septum.dataplane.sandbox import (
    Sandbox,
    TcpServer,
    UdpEchoServer,
    echo,
    open_socket,
    ping,
    tcp_connect,
    tcp_connection,
    udp_request,
)

pytestmark = pytest.mark.privileged

INGRESS, EGRESS = TrafficDirection.INGRESS, TrafficDirection.EGRESS
CLIENT_ID, OTHER_ID, SERVER_ID = 2001, 2002, 2003
TCP, UDP = 6, 17


class Cluster:
    def __init__(self, node: NodeDatapath, sandbox: Sandbox) -> None:
        self.node = node
        self.sandbox = sandbox
        self.client = sandbox.add_pod("c", "10.96.0.1", "fd00:96::1")
        self.other = sandbox.add_pod("o", "10.96.0.2", "fd00:96::2")
        self.server = sandbox.add_pod("s", "10.96.0.3", "fd00:96::3")
        prefixes = {}
        for endpoint_id, (pod, identity) in enumerate(
            [(self.client, CLIENT_ID), (self.other, OTHER_ID), (self.server, SERVER_ID)], 1
        ):
            prefixes[f"{pod.ipv4}/32"] = identity
            prefixes[f"{pod.ipv6}/128"] = identity
            node.upsert_endpoint(
                EndpointSpec(endpoint_id, pod.host_interface, identity, pod.ipv4, pod.ipv6)
            )
        node.upsert_prefixes(prefixes)
        self.servers: list[TcpServer | UdpEchoServer] = [
            TcpServer(self.server.name, "::", 8080),
            TcpServer(self.server.name, "::", 9090),
            UdpEchoServer(self.server.name, "10.96.0.3", 5353),
        ]

    def server_policy(self, *entries: PolicyEntry, egress: bool = False) -> None:
        self.node.replace_policy(
            3, EndpointPolicy(enforce_ingress=True, enforce_egress=egress, entries=entries)
        )

    def close(self) -> None:
        for server in self.servers:
            server.close()


@pytest.fixture
def cluster(node: NodeDatapath, sandbox: Sandbox) -> Iterator[Cluster]:
    c = Cluster(node, sandbox)
    try:
        yield c
    finally:
        c.close()


def interface_mac(ns: str, ifname: str) -> str:
    """The interface's Ethernet address as the kernel reports it ("aa:bb:..", lower case)."""
    with netns.entered(ns), IPRoute() as ipr:
        (link,) = ipr.get_links(ipr.link_lookup(ifname=ifname)[0])
        return str(link.get_attr("IFLA_ADDRESS"))


def wait_for_flows(
    node: NodeDatapath, predicate: Callable[[Flow], bool], count: int = 1, timeout_s: float = 5
) -> list[Flow]:
    """Read events until `count` match `predicate`; fail with what was seen at the deadline."""
    deadline = time.monotonic() + timeout_s
    matched: list[Flow] = []
    seen: list[Flow] = []
    while len(matched) < count and (left := deadline - time.monotonic()) > 0:
        batch = node.read_flows(timeout_s=left)
        seen.extend(batch)
        matched.extend(f for f in batch if predicate(f))
    assert len(matched) >= count, f"wanted {count} matching events, saw: {seen}"
    return matched


def collect_until(
    node: NodeDatapath, stop: Callable[[list[Flow]], bool], timeout_s: float = 5
) -> list[Flow]:
    """Every event read until `stop(events so far)` holds (fails at the deadline)."""
    deadline = time.monotonic() + timeout_s
    seen: list[Flow] = []
    while not stop(seen):
        left = deadline - time.monotonic()
        assert left > 0, f"condition not met; events seen: {seen}"
        seen.extend(node.read_flows(timeout_s=left))
    return seen


def test_allow_by_identity_and_port(cluster):
    cluster.server_policy(PolicyEntry(INGRESS, CLIENT_ID, TCP, 8080, rule_id=42))
    assert tcp_connect(cluster.client.name, "10.96.0.3", 8080)
    assert not tcp_connect(cluster.other.name, "10.96.0.3", 8080, timeout_s=0.5)
    assert not tcp_connect(cluster.client.name, "10.96.0.3", 9090, timeout_s=0.5)
    drops = wait_for_flows(
        cluster.node,
        lambda f: f.verdict == Verdict.DROPPED and f.src_ip == "10.96.0.2",
    )
    assert drops[0].drop_reason == DropReason.POLICY_DENIED
    assert (drops[0].src_identity, drops[0].dst_identity) == (OTHER_ID, SERVER_ID)


def test_port_range(cluster):
    cluster.server_policy(PolicyEntry(INGRESS, protocol=TCP, port=8000, end_port=8100))
    assert tcp_connect(cluster.other.name, "10.96.0.3", 8080)
    assert not tcp_connect(cluster.other.name, "10.96.0.3", 9090, timeout_s=0.5)


def test_cidr_peer(cluster):
    # the client is known only through a CIDR identity; the other pod keeps its own
    cluster.node.remove_prefix("10.96.0.1/32")
    cluster.node.upsert_prefix("10.96.0.0/29", 3000)
    cluster.server_policy(PolicyEntry(INGRESS, 3000, TCP, 8080, rule_id=5))
    assert tcp_connect(cluster.client.name, "10.96.0.3", 8080)
    assert not tcp_connect(cluster.other.name, "10.96.0.3", 8080, timeout_s=0.5)
    # an address the ipcache does not know at all is `world`
    cluster.node.remove_prefix("10.96.0.0/29")
    cluster.server_policy(PolicyEntry(INGRESS, 2, TCP, 8080, rule_id=6))
    assert tcp_connect(cluster.client.name, "10.96.0.3", 8080)


def test_deny_beats_allow(cluster):
    cluster.server_policy(
        PolicyEntry(INGRESS, rule_id=1),  # allow everything from everyone
        PolicyEntry(INGRESS, OTHER_ID, TCP, 8080, action=PolicyAction.DENY, rule_id=2),
    )
    assert tcp_connect(cluster.client.name, "10.96.0.3", 8080)
    assert tcp_connect(cluster.other.name, "10.96.0.3", 9090)
    assert not tcp_connect(cluster.other.name, "10.96.0.3", 8080, timeout_s=0.5)
    drop = wait_for_flows(cluster.node, lambda f: f.verdict == Verdict.DROPPED)[0]
    assert (drop.drop_reason, drop.rule_id) == (DropReason.POLICY_DENY, 2)


def test_replies_pass_while_new_connections_back_are_denied(cluster):
    back = TcpServer(cluster.client.name, "10.96.0.1", 7070)
    try:
        cluster.server_policy(PolicyEntry(INGRESS, CLIENT_ID, TCP, 8080), egress=True)
        assert tcp_connect(cluster.client.name, "10.96.0.3", 8080)
        assert not tcp_connect(cluster.server.name, "10.96.0.1", 7070, timeout_s=0.5)
        drop = wait_for_flows(
            cluster.node, lambda f: f.verdict == Verdict.DROPPED and f.direction == EGRESS
        )[0]
        assert (drop.endpoint_id, drop.drop_reason) == (3, DropReason.POLICY_DENIED)
    finally:
        back.close()


def test_established_connection_survives_a_policy_change_by_default(cluster):
    cluster.server_policy(PolicyEntry(INGRESS, CLIENT_ID, TCP, 8080))
    with tcp_connection(cluster.client.name, "10.96.0.3", 8080) as conn:
        assert echo(conn)
        cluster.server_policy()  # deny all ingress
        assert echo(conn), "established connections are kept (Cilium's default)"
        assert not tcp_connect(cluster.client.name, "10.96.0.3", 8080, timeout_s=0.5)


def test_established_connection_is_revoked_when_configured(cluster):
    cluster.node.set_revoke_on_policy_change(True)
    cluster.server_policy(PolicyEntry(INGRESS, CLIENT_ID, TCP, 8080))
    with tcp_connection(cluster.client.name, "10.96.0.3", 8080) as conn:
        assert echo(conn)
        cluster.server_policy(PolicyEntry(INGRESS, CLIENT_ID, TCP, 8080, rule_id=9))
        assert echo(conn), "still allowed by the new policy: kept"
        cluster.server_policy()  # deny all ingress
        conn.settimeout(0.5)
        assert not echo(conn), "revoked by the new policy"
    wait_for_flows(
        cluster.node,
        lambda f: f.verdict == Verdict.DROPPED and f.drop_reason == DropReason.POLICY_DENIED,
    )


def test_audit_mode(cluster):
    cluster.server_policy()  # deny all ingress...
    cluster.node.set_audit(3, True)  # ...but only report it
    assert tcp_connect(cluster.client.name, "10.96.0.3", 8080)
    audit = wait_for_flows(
        cluster.node,
        lambda f: f.verdict == Verdict.AUDIT and f.event_type == EventType.POLICY_VERDICT,
    )[0]
    assert audit.drop_reason == DropReason.POLICY_DENIED
    counters = cluster.node.counters()
    assert any(k.verdict == Verdict.AUDIT and k.direction == INGRESS for k in counters)
    cluster.node.set_audit(3, False)
    assert not tcp_connect(cluster.client.name, "10.96.0.3", 8080, timeout_s=0.5)


def test_udp_icmp_and_icmpv6(cluster):
    cluster.server_policy(
        PolicyEntry(INGRESS, CLIENT_ID, UDP, 5353),
        PolicyEntry(INGRESS, CLIENT_ID, 1, 8),  # ICMP echo request
        PolicyEntry(INGRESS, CLIENT_ID, 58, 128),  # ICMPv6 echo request
    )
    assert udp_request(cluster.client.name, "10.96.0.3", 5353)
    assert ping(cluster.client.name, "10.96.0.3")
    assert ping(cluster.client.name, "fd00:96::3")
    assert not udp_request(cluster.other.name, "10.96.0.3", 5353, timeout_s=0.5)
    assert not ping(cluster.other.name, "10.96.0.3", timeout_s=0.5)
    assert not ping(cluster.other.name, "fd00:96::3", timeout_s=0.5)
    icmp6 = wait_for_flows(
        cluster.node, lambda f: f.protocol == 58 and f.verdict == Verdict.DROPPED
    )[0]
    assert (icmp6.icmp_type, icmp6.ip_version) == (128, IPVersion.V6)


def test_ipv6_tcp(cluster):
    cluster.server_policy(PolicyEntry(INGRESS, CLIENT_ID, TCP, 8080))
    assert tcp_connect(cluster.client.name, "fd00:96::3", 8080)
    assert not tcp_connect(cluster.other.name, "fd00:96::3", 8080, timeout_s=0.5)


def test_every_field_of_a_flow_event_and_aggregation(cluster):
    cluster.server_policy(PolicyEntry(INGRESS, CLIENT_ID, TCP, 8080, rule_id=42))
    before_ns = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
    with tcp_connection(cluster.client.name, "10.96.0.3", 8080) as conn:
        client_port = conn.getsockname()[1]
        for _ in range(100):
            assert echo(conn)
    after_ns = time.clock_gettime_ns(time.CLOCK_BOOTTIME)

    def server_fin_seen(events: list[Flow]) -> bool:
        return any(
            f.endpoint_id == 3 and f.src_port == 8080 and f.dst_port == client_port
            and f.tcp_flags & TcpFlag.FIN
            for f in events
        )  # fmt: skip

    flows = collect_until(cluster.node, server_fin_seen)
    new = next(f for f in flows if f.event_type == EventType.POLICY_VERDICT and f.endpoint_id == 3)
    assert before_ns <= new.time_ns <= after_ns
    assert new.verdict == Verdict.FORWARDED
    assert new.drop_reason == DropReason.NONE
    assert new.direction == INGRESS
    assert new.is_reply is False
    assert new.ip_version == IPVersion.V4
    assert (new.src_ip, new.dst_ip) == ("10.96.0.1", "10.96.0.3")
    assert (new.src_port, new.dst_port) == (client_port, 8080)
    assert new.protocol == TCP
    assert (new.icmp_type, new.icmp_code) == (0, 0)
    assert (new.src_identity, new.dst_identity) == (CLIENT_ID, SERVER_ID)
    assert new.endpoint_id == 3
    assert new.ifindex == cluster.server.ifindex
    assert new.tcp_flags == TcpFlag.SYN
    assert new.bytes >= 54 and new.packets == 1
    assert new.suppressed_drops == 0
    assert new.rule_id == 42
    assert new.l7_proxy_port == 0
    assert new.match_type == MatchType.L3_L4
    assert new.trace_point == TraceObservationPoint.TO_ENDPOINT
    assert new.flags == 0
    client_side = next(
        f for f in flows if f.event_type == EventType.POLICY_VERDICT and f.endpoint_id == 1
    )
    assert (client_side.direction, client_side.trace_point) == (
        EGRESS,
        TraceObservationPoint.FROM_ENDPOINT,
    )
    assert client_side.match_type == MatchType.NONE  # client egress is not enforced
    # Ethernet addresses: towards the server, its host veth -> its eth0; from the client,
    # its eth0 -> its host veth (the pods' gateway lives on every host veth).
    node_ns = cluster.sandbox.node_ns
    server_veth = interface_mac(node_ns, cluster.server.host_interface)
    client_veth = interface_mac(node_ns, cluster.client.host_interface)
    server_eth0 = interface_mac(cluster.server.name, "eth0")
    client_eth0 = interface_mac(cluster.client.name, "eth0")
    assert len({server_veth, client_veth, server_eth0, client_eth0}) == 4
    assert (new.src_mac, new.dst_mac) == (server_veth, server_eth0)
    assert (client_side.src_mac, client_side.dst_mac) == (client_eth0, client_veth)
    # the close (FIN) is reported; the 100 data packets each way were not, one by one
    mine = [f for f in flows if client_port in (f.src_port, f.dst_port)]
    assert len(mine) <= 20, f"an established flow must not report every packet: {len(mine)}"
    replies = [f for f in mine if f.is_reply]
    assert replies and all(f.direction == INGRESS for f in replies if f.endpoint_id == 3)
    assert sum(f.packets for f in mine if f.endpoint_id == 3) >= 200


def test_drop_events_are_rate_limited_with_a_suppressed_count(cluster):
    cluster.server_policy()
    sock = open_socket(cluster.other.name, socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind(("10.96.0.2", 40404))
        deadline = time.monotonic() + 10
        reported: list[Flow] = []
        while time.monotonic() < deadline:
            sock.sendto(b"x", ("10.96.0.3", 5353))
            reported += [f for f in cluster.node.read_flows(0.01) if f.src_port == 40404]
            if any(f.suppressed_drops for f in reported):
                break
        assert reported[0].suppressed_drops == 0
        assert any(f.suppressed_drops > 0 for f in reported[1:]), reported
    finally:
        sock.close()


def test_l7_marker_is_reported_and_fails_closed_without_a_proxy(cluster):
    # (the redirect to a running proxy: test_l7_redirect_privileged.py)
    cluster.server_policy(PolicyEntry(INGRESS, CLIENT_ID, TCP, 8080, l7_proxy_port=15001))
    assert not tcp_connect(cluster.client.name, "10.96.0.3", 8080, timeout_s=0.5)

    def verdict(flows: list[Flow]) -> list[Flow]:
        return [f for f in flows if f.event_type == EventType.POLICY_VERDICT and f.endpoint_id == 3]

    seen = collect_until(
        cluster.node,
        lambda flows: (
            bool(verdict(flows))
            and any(f.drop_reason == DropReason.PROXY_LOOKUP_FAILED for f in flows)
        ),
    )
    flow = verdict(seen)[0]
    assert flow.l7_proxy_port == 15001 and flow.verdict == Verdict.FORWARDED


def test_counters_by_verdict_reason_and_direction(cluster):
    cluster.server_policy(PolicyEntry(INGRESS, CLIENT_ID, TCP, 8080))
    assert tcp_connect(cluster.client.name, "10.96.0.3", 8080)
    assert not tcp_connect(cluster.other.name, "10.96.0.3", 8080, timeout_s=0.3)
    counters = cluster.node.counters()
    forwarded = {(k.direction, k.verdict, k.drop_reason) for k in counters}
    assert (INGRESS, Verdict.FORWARDED, 0) in forwarded
    assert (EGRESS, Verdict.FORWARDED, 0) in forwarded
    assert (INGRESS, Verdict.DROPPED, DropReason.POLICY_DENIED) in forwarded
    assert all(v.bytes >= v.packets * 42 for v in counters.values())
    assert cluster.node.lost_events() == 0


def test_anti_spoofing(cluster):
    # the client sends from an address it does not own
    cluster.node.upsert_endpoint(
        EndpointSpec(1, cluster.client.host_interface, CLIENT_ID, "10.96.0.9", "fd00:96::9")
    )
    assert not tcp_connect(cluster.client.name, "10.96.0.3", 8080, timeout_s=0.5)
    drop = wait_for_flows(cluster.node, lambda f: f.verdict == Verdict.DROPPED)[0]
    assert drop.drop_reason == DropReason.INVALID_SOURCE_IP


def test_xdp_prefilter(cluster):
    sandbox = cluster.sandbox
    uplink = f"{sandbox.prefix}up"
    outside = sandbox.add_outside("out", uplink, "203.0.113.1", ["203.0.113.10", "198.51.100.10"])
    cluster.node.attach_uplink(uplink)
    cluster.node.set_prefilter({"198.51.100.0/24": 77})
    # 198.51.100.10 is only reachable back through the uplink's other subnet: route it
    assert _connect_from(outside, "203.0.113.10", "10.96.0.3", 8080)
    assert not _connect_from(outside, "198.51.100.10", "10.96.0.3", 8080)
    drop = wait_for_flows(cluster.node, lambda f: f.drop_reason == DropReason.PREFILTER_DENIED)[0]
    assert (drop.rule_id, drop.trace_point) == (77, TraceObservationPoint.FROM_NETWORK)
    assert drop.src_ip == "198.51.100.10" and drop.direction == INGRESS
    assert drop.src_identity == 2  # world
    cluster.node.set_prefilter([])
    cluster.node.detach_uplink(uplink)


def _connect_from(ns: str, source: str, address: str, port: int) -> bool:
    sock = open_socket(ns, socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(0.5)
    try:
        sock.bind((source, 0))
        sock.connect((address, port))
        return True
    except OSError:
        return False
    finally:
        sock.close()
