"""Real traffic through the real datapath in namespaces -> Septum's Observer.

Pods are network namespaces (prefix `sfl`) wired to a node namespace; the
datapath is attached to their veths with a policy on the deathstar; the
Observer reads the datapath's ring buffer. Flows, filters, follow latency and
metrics are checked against the traffic the test sent.
"""

from __future__ import annotations

import secrets
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import observe_helpers as h
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pyroute2 import IPRoute

from septum.dataplane import abi, netns
from septum.dataplane.config import DatapathConfig
from septum.dataplane.datapath import EndpointSpec, NodeDatapath
from septum.dataplane.observe.api.flow import flow_pb2
from septum.dataplane.observe.api.observer import observer_pb2, observer_pb2_grpc
from septum.dataplane.observe.metadata import EndpointInfo, StaticMetadata
from septum.dataplane.observe.node import NodeObserver, ObserveConfig
from septum.dataplane.observe.server import ListenConfig
from septum.dataplane.observe.sources import DatapathSource, datapath_health
from septum.dataplane.policy import EndpointPolicy, PolicyEntry
from septum.dataplane.sandbox import (
    Sandbox,
    TcpServer,
    UdpEchoServer,
    ping,
    sandbox_namespaces,
    tcp_connect,
    udp_request,
)

pytestmark = pytest.mark.privileged

ALLOW_RULE = 1
TCP, UDP = 6, 17


@dataclass
class Cluster:
    sandbox: Sandbox
    datapath: NodeDatapath
    observer: NodeObserver
    pods: dict[str, EndpointInfo]
    channel: grpc.Channel

    @property
    def stub(self) -> observer_pb2_grpc.ObserverStub:
        return observer_pb2_grpc.ObserverStub(self.channel)

    def flows(self, **request: object) -> list[flow_pb2.Flow]:
        reply = self.stub.GetFlows(observer_pb2.GetFlowsRequest(**request), timeout=10)  # type: ignore[arg-type]
        return [resp.flow for resp in reply if resp.HasField("flow")]

    def wait_for_flows(
        self, predicate: object, count: int = 1, timeout_s: float = 10
    ) -> list[flow_pb2.Flow]:
        """Poll GetFlows until `count` flows match (events reach the ring asynchronously)."""
        deadline = time.monotonic() + timeout_s
        seen: list[flow_pb2.Flow] = []
        while time.monotonic() < deadline:
            seen = [f for f in self.flows() if predicate(f)]  # type: ignore[operator]
            if len(seen) >= count:
                return seen
            time.sleep(0.05)
        raise AssertionError(f"{len(seen)} of {count} flows after {timeout_s}s: {seen}")

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        url = f"http://127.0.0.1:{self.observer.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as reply:
            text = reply.read().decode()
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }


@pytest.fixture
def cluster(short_tmp: Path) -> Iterator[Cluster]:
    tag = secrets.token_hex(2)
    prefix = f"sfl{tag}"
    sandbox = Sandbox(prefix)
    datapath: NodeDatapath | None = None
    observer: NodeObserver | None = None
    channel: grpc.Channel | None = None
    try:
        specs = {
            "xwing": ("default", 1001, "10.201.0.1", "fd00:201::1"),
            "deathstar": ("empire", 1002, "10.201.0.2", "fd00:201::2"),
            "tiefighter": ("empire", 1003, "10.201.0.3", "fd00:201::3"),
        }
        datapath = NodeDatapath(DatapathConfig(node_name=f"sfl-{tag}", netns=sandbox.node_ns))
        metadata = StaticMetadata()
        pods: dict[str, EndpointInfo] = {}
        for index, (short, (namespace, identity, ip4, ip6)) in enumerate(specs.items(), start=1):
            pod = sandbox.add_pod(short[:4], ip4, ip6)
            datapath.upsert_endpoint(
                EndpointSpec(index, pod.host_interface, identity, ipv4=ip4, ipv6=ip6)
            )
            datapath.upsert_prefixes({f"{ip4}/32": identity, f"{ip6}/128": identity})
            info = EndpointInfo(
                index, identity, namespace, short, labels=(f"k8s:app={short}",), ips=(ip4, ip6)
            )
            metadata.add_endpoint(info)
            pods[short] = info
        metadata.add_policy(ALLOW_RULE, h.ALLOW_POLICY)
        # The deathstar admits the xwing on TCP 80 (and pings); everything else is denied.
        datapath.replace_policy(
            pods["deathstar"].endpoint_id,
            EndpointPolicy.selecting(
                [
                    PolicyEntry(
                        abi.TrafficDirection.INGRESS,
                        peer_identity=1001,
                        protocol=TCP,
                        port=80,
                        rule_id=ALLOW_RULE,
                    ),
                    PolicyEntry(
                        abi.TrafficDirection.INGRESS,
                        peer_identity=1001,
                        protocol=1,
                        port=8,
                        rule_id=ALLOW_RULE,
                    ),
                ]
            ),
        )
        config = ObserveConfig(
            node_name=f"sfl-{tag}",
            listen=ListenConfig(unix_socket=short_tmp / "observer.sock"),
            metrics_address=("127.0.0.1", 0),
            health=datapath_health(datapath),
        )
        observer = NodeObserver(config, DatapathSource(datapath), metadata)
        observer.start()
        channel = grpc.insecure_channel(f"unix://{short_tmp / 'observer.sock'}")
        yield Cluster(sandbox, datapath, observer, pods, channel)
    finally:
        if channel is not None:
            channel.close()
        if observer is not None:
            observer.stop()
        if datapath is not None:
            datapath.teardown()
        sandbox.close()
        assert sandbox_namespaces(prefix) == [], "network namespaces left behind"
        assert not (Path("/sys/fs/bpf/septum") / f"sfl-{tag}").exists(), "BPF pins left behind"


def _ns(cluster: Cluster, short: str) -> str:
    return cluster.sandbox.pods[short[:4]].name


def _mac(ns: str, ifname: str) -> str:
    """An interface's Ethernet address, read from the kernel ("aa:bb:..", lower case)."""
    with netns.entered(ns), IPRoute() as ipr:
        (link,) = ipr.get_links(ipr.link_lookup(ifname=ifname)[0])
        return str(link.get_attr("IFLA_ADDRESS"))


def _pod_macs(cluster: Cluster, short: str) -> tuple[str, str]:
    """(host-side veth, pod eth0) Ethernet addresses of a pod."""
    pod = cluster.sandbox.pods[short[:4]]
    return _mac(cluster.sandbox.node_ns, pod.host_interface), _mac(pod.name, "eth0")


def test_real_traffic_becomes_enriched_flows(cluster: Cluster) -> None:
    deathstar = cluster.pods["deathstar"]
    server = TcpServer(_ns(cluster, "deathstar"), deathstar.ips[0], 80)
    try:
        assert tcp_connect(_ns(cluster, "xwing"), deathstar.ips[0], 80)
        assert not tcp_connect(_ns(cluster, "tiefighter"), deathstar.ips[0], 80, timeout_s=0.5)
    finally:
        server.close()

    def allowed(f: flow_pb2.Flow) -> bool:
        return (
            f.verdict == flow_pb2.FORWARDED
            and f.destination.pod_name == "deathstar"
            and f.l4.TCP.flags.SYN
            and not f.l4.TCP.flags.ACK
            and f.trace_observation_point == flow_pb2.TO_ENDPOINT
        )

    (syn,) = cluster.wait_for_flows(allowed)
    assert (syn.source.namespace, syn.source.pod_name, syn.source.identity) == (
        "default",
        "xwing",
        1001,
    )
    assert (syn.destination.namespace, syn.destination.identity) == ("empire", 1002)
    assert syn.IP.source == "10.201.0.1" and syn.IP.destination == "10.201.0.2"
    assert syn.IP.ipVersion == flow_pb2.IPv4 and syn.l4.TCP.destination_port == 80
    assert syn.traffic_direction == flow_pb2.INGRESS and syn.is_reply.value is False
    assert syn.trace_observation_point == flow_pb2.TO_ENDPOINT
    assert syn.event_type.type == abi.EventType.POLICY_VERDICT
    assert [(p.name, p.kind) for p in syn.ingress_allowed_by] == [("rule1", "CiliumNetworkPolicy")]
    assert syn.node_name == cluster.observer.config.node_name

    (drop,) = cluster.wait_for_flows(
        lambda f: f.verdict == flow_pb2.DROPPED and f.source.pod_name == "tiefighter"
    )
    assert drop.drop_reason_desc == flow_pb2.POLICY_DENIED and drop.drop_reason == 133
    assert drop.event_type.type == abi.EventType.DROP and drop.destination.pod_name == "deathstar"
    assert drop.l4.TCP.destination_port == 80 and drop.l4.TCP.flags.SYN

    # The SYN-ACK leaving the deathstar: a reply of an ingress connection.
    (reply,) = cluster.wait_for_flows(
        lambda f: (
            f.is_reply.value
            and f.l4.TCP.flags.SYN
            and f.l4.TCP.flags.ACK
            and f.trace_observation_point == flow_pb2.FROM_ENDPOINT
        )
    )
    assert (reply.source.pod_name, reply.destination.pod_name) == ("deathstar", "xwing")
    assert reply.l4.TCP.source_port == 80 and reply.traffic_direction == flow_pb2.INGRESS
    # Same-node traffic is seen at both pods' hooks, as Cilium reports it.
    (egress_syn,) = cluster.wait_for_flows(
        lambda f: (
            f.source.pod_name == "xwing"
            and f.l4.TCP.flags.SYN
            and not f.l4.TCP.flags.ACK
            and f.trace_observation_point == flow_pb2.FROM_ENDPOINT
        )
    )
    assert (
        egress_syn.traffic_direction == flow_pb2.EGRESS and egress_syn.verdict == flow_pb2.FORWARDED
    )
    # Ethernet: into the deathstar, its host veth -> its eth0; out of a pod, its eth0 -> its
    # host veth (the pods' gateway address lives on every host veth).
    deathstar_veth, deathstar_eth0 = _pod_macs(cluster, "deathstar")
    xwing_veth, xwing_eth0 = _pod_macs(cluster, "xwing")
    assert syn.ethernet == flow_pb2.Ethernet(source=deathstar_veth, destination=deathstar_eth0)
    assert drop.ethernet == flow_pb2.Ethernet(source=deathstar_veth, destination=deathstar_eth0)
    assert reply.ethernet == flow_pb2.Ethernet(source=deathstar_eth0, destination=deathstar_veth)
    assert egress_syn.ethernet == flow_pb2.Ethernet(source=xwing_eth0, destination=xwing_veth)


def test_udp_icmp_and_ipv6(cluster: Cluster) -> None:
    xwing, deathstar = _ns(cluster, "xwing"), cluster.pods["deathstar"]
    assert ping(xwing, deathstar.ips[0])
    echo = UdpEchoServer(_ns(cluster, "deathstar"), deathstar.ips[1], 53)
    try:
        assert not udp_request(xwing, deathstar.ips[1], 53, timeout_s=0.5)  # not allowed
    finally:
        echo.close()
    (icmp,) = cluster.wait_for_flows(
        lambda f: (
            f.l4.HasField("ICMPv4")
            and f.l4.ICMPv4.type == 8
            and f.verdict == flow_pb2.FORWARDED
            and f.trace_observation_point == flow_pb2.TO_ENDPOINT
        )
    )
    assert icmp.source.pod_name == "xwing" and icmp.Summary == "ICMPv4 EchoRequest"
    (udp,) = cluster.wait_for_flows(
        lambda f: f.l4.HasField("UDP") and f.verdict == flow_pb2.DROPPED
    )
    assert udp.IP.ipVersion == flow_pb2.IPv6 and udp.IP.destination == "fd00:201::2"
    assert udp.l4.UDP.destination_port == 53 and udp.source.pod_name == "xwing"


def test_filters_on_real_flows(cluster: Cluster) -> None:
    deathstar = cluster.pods["deathstar"]
    server = TcpServer(_ns(cluster, "deathstar"), deathstar.ips[0], 80)
    try:
        assert tcp_connect(_ns(cluster, "xwing"), deathstar.ips[0], 80)
        assert not tcp_connect(_ns(cluster, "tiefighter"), deathstar.ips[0], 80, timeout_s=0.5)
    finally:
        server.close()
    cluster.wait_for_flows(lambda f: f.verdict == flow_pb2.DROPPED)
    drops = cluster.flows(whitelist=[flow_pb2.FlowFilter(verdict=[flow_pb2.DROPPED])])
    assert drops and {f.source.pod_name for f in drops} == {"tiefighter"}
    from_xwing = cluster.flows(whitelist=[flow_pb2.FlowFilter(source_pod=["default/xwing"])])
    assert from_xwing and all(f.source.pod_name == "xwing" for f in from_xwing)
    not_drops = cluster.flows(blacklist=[flow_pb2.FlowFilter(verdict=[flow_pb2.DROPPED])])
    assert not_drops and all(f.verdict != flow_pb2.DROPPED for f in not_drops)
    both = cluster.flows(
        whitelist=[
            flow_pb2.FlowFilter(
                destination_pod=["empire/"],
                destination_port=["80"],
                source_label=["app=tiefighter"],
            )
        ]
    )
    assert both and all(f.source.pod_name == "tiefighter" for f in both)


def test_follow_delivers_within_100ms(cluster: Cluster) -> None:
    deathstar = cluster.pods["deathstar"]
    received: list[tuple[float, flow_pb2.Flow]] = []
    got = threading.Event()
    stream = cluster.stub.GetFlows(
        observer_pb2.GetFlowsRequest(
            follow=True,
            whitelist=[
                flow_pb2.FlowFilter(source_pod=["empire/tiefighter"], verdict=[flow_pb2.DROPPED])
            ],
        ),
        timeout=60,
    )

    def read() -> None:
        try:
            for resp in stream:
                received.append((time.monotonic(), resp.flow))
                got.set()
        except grpc.RpcError as err:  # the test cancels the stream when done
            if err.code() != grpc.StatusCode.CANCELLED:  # type: ignore[attr-defined]
                raise

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        latencies = []
        for _attempt in range(3):
            got.clear()
            received.clear()
            sent = time.monotonic()
            # The first SYN is dropped at once; its flow must arrive within 100 ms.
            tcp_connect(_ns(cluster, "tiefighter"), deathstar.ips[0], 80, timeout_s=0.2)
            assert got.wait(5), "no flow followed"
            latencies.append(received[0][0] - sent)
        # Best of three: the budget is the pipeline's, not the scheduler's on a busy 2-core VM.
        assert min(latencies) < 0.100, f"follow latencies {latencies}"
    finally:
        stream.cancel()
        reader.join(5)


def test_metrics_match_the_traffic(cluster: Cluster) -> None:
    deathstar = cluster.pods["deathstar"]
    server = TcpServer(_ns(cluster, "deathstar"), deathstar.ips[0], 80)
    try:
        for _ in range(3):
            assert tcp_connect(_ns(cluster, "xwing"), deathstar.ips[0], 80)
        assert not tcp_connect(_ns(cluster, "tiefighter"), deathstar.ips[0], 80, timeout_s=0.3)
    finally:
        server.close()
    cluster.wait_for_flows(lambda f: f.verdict == flow_pb2.DROPPED)
    new_allowed = cluster.wait_for_flows(
        lambda f: (
            f.event_type.type == 5
            and f.verdict == flow_pb2.FORWARDED
            and f.destination.pod_name == "deathstar"
            and f.traffic_direction == flow_pb2.INGRESS
        ),
        count=3,
    )
    flows = cluster.flows()
    metrics = cluster.metrics()

    def value(name: str, **labels: str) -> float:
        return metrics.get((name, tuple(sorted(labels.items()))), 0.0)

    drops = [f for f in flows if f.verdict == flow_pb2.DROPPED]
    assert value("hubble_drop_total", reason="POLICY_DENIED", protocol="TCP") == len(drops) >= 1
    processed = sum(v for (name, _), v in metrics.items() if name == "hubble_flows_processed_total")
    assert processed == len(flows) == cluster.observer.ring.seen_flows
    assert (
        value(
            "hubble_policy_verdicts_total", direction="ingress", match="l3-l4", action="forwarded"
        )
        == len(new_allowed)
        == 3
    )
    assert value("hubble_port_distribution_total", protocol="TCP", port="80") >= 3
    assert value("hubble_tcp_flags_total", flag="SYN", family="IPv4") >= 3
    assert value("hubble_tcp_flags_total", flag="SYN-ACK", family="IPv4") >= 3
    assert value("hubble_lost_events_total", source="perf_event_ring_buffer") == 0
    assert value("septum_endpoints") == 3
    fill = {
        dict(labels)["map"]: v
        for (name, labels), v in metrics.items()
        if name == "septum_map_fill_ratio"
    }
    assert fill[abi.MAP_ENDPOINTS] == 3 / cluster.datapath.config.endpoints
    assert fill[abi.MAP_CONNTRACK4] > 0  # the connections just made (IPv4)
    dropped_packets = value(
        "septum_datapath_packets_total", direction="INGRESS", verdict="DROPPED", reason="133"
    )
    assert dropped_packets >= len(drops)
