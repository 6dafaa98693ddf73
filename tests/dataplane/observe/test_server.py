"""The Observer gRPC API on its unix socket: every method, header, health, reflection."""

from __future__ import annotations

import threading
import time

import grpc
import observe_helpers as h
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from septum.dataplane.observe.api.flow import flow_pb2
from septum.dataplane.observe.api.observer import observer_pb2
from septum.dataplane.observe.api.peer import peer_pb2, peer_pb2_grpc
from septum.dataplane.observe.api.relay import relay_pb2
from septum.dataplane.observe.server import ListenConfig, ServerConfigError
from septum.dataplane.observe.service import HUBBLE_API_VERSION


def test_get_flows_enriched(observer: h.RunningObserver) -> None:
    observer.push(
        h.event(rule_id=1),
        h.event(
            h.XWING, h.DEATHSTAR, dst_port=8080, event_type=1, verdict=2, drop_reason=181, rule_id=2
        ),
    )
    responses = list(observer.stub().GetFlows(observer_pb2.GetFlowsRequest(number=10), timeout=10))
    allowed, dropped = (resp.flow for resp in responses)
    assert allowed.verdict == flow_pb2.FORWARDED and allowed.Type == flow_pb2.L3_L4
    assert (allowed.source.namespace, allowed.source.pod_name) == ("default", "xwing")
    assert allowed.destination.workloads[0].kind == "Deployment"
    assert list(allowed.source.labels) == ["k8s:app=xwing", "k8s:org=alliance"]
    assert allowed.IP.source == "10.0.0.1" and allowed.IP.ipVersion == flow_pb2.IPv4
    assert allowed.l4.TCP.destination_port == 80 and allowed.l4.TCP.flags.SYN
    assert allowed.traffic_direction == flow_pb2.INGRESS and allowed.is_reply.value is False
    assert allowed.trace_observation_point == flow_pb2.TO_ENDPOINT
    assert allowed.event_type.type == 5 and allowed.node_name == h.NODE
    assert [(p.name, p.namespace, p.kind) for p in allowed.ingress_allowed_by] == [
        ("rule1", "empire", "CiliumNetworkPolicy")
    ]
    assert dropped.verdict == flow_pb2.DROPPED and dropped.drop_reason == 181
    assert dropped.drop_reason_desc == flow_pb2.POLICY_DENY
    assert dropped.event_type.type == 1 and dropped.event_type.sub_type == 181
    assert [p.name for p in dropped.ingress_denied_by] == ["deny-xwing"]
    assert allowed.uuid != dropped.uuid


def test_server_version_header(observer: h.RunningObserver) -> None:
    call = observer.stub().GetFlows(observer_pb2.GetFlowsRequest(number=1), timeout=10)
    assert dict(call.initial_metadata())["hubble-server-version"] == HUBBLE_API_VERSION
    list(call)
    _, status_call = observer.stub().ServerStatus.with_call(
        observer_pb2.ServerStatusRequest(), timeout=10
    )
    assert dict(status_call.initial_metadata())["hubble-server-version"] == HUBBLE_API_VERSION


def test_server_status_and_nodes(observer: h.RunningObserver) -> None:
    observer.push(*(h.event(src_port=i) for i in range(5)))
    stub = observer.stub()
    status = stub.ServerStatus(observer_pb2.ServerStatusRequest(), timeout=10)
    assert (status.num_flows, status.max_flows, status.seen_flows) == (5, 4095, 5)
    assert status.uptime_ns > 0 and status.version.startswith("septum")
    (node,) = stub.GetNodes(observer_pb2.GetNodesRequest(), timeout=10).nodes
    assert node.name == h.NODE and node.state == relay_pb2.NODE_CONNECTED
    assert (node.num_flows, node.max_flows, node.seen_flows) == (5, 4095, 5)


def test_namespaces(observer: h.RunningObserver) -> None:
    reply = observer.stub().GetNamespaces(observer_pb2.GetNamespacesRequest(), timeout=10)
    assert [ns.namespace for ns in reply.namespaces] == ["default", "empire"]


def test_agent_and_debug_events_answer_with_nothing(observer: h.RunningObserver) -> None:
    stub = observer.stub()
    assert list(stub.GetAgentEvents(observer_pb2.GetAgentEventsRequest(number=5), timeout=10)) == []
    assert list(stub.GetDebugEvents(observer_pb2.GetDebugEventsRequest(number=5), timeout=10)) == []
    follow = stub.GetAgentEvents(observer_pb2.GetAgentEventsRequest(follow=True), timeout=0.5)
    with pytest.raises(grpc.RpcError) as err:
        list(follow)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED  # stayed open, sent nothing


def test_invalid_filter_is_invalid_argument(observer: h.RunningObserver) -> None:
    request = observer_pb2.GetFlowsRequest(whitelist=[flow_pb2.FlowFilter(source_ip=["no-ip"])])
    with pytest.raises(grpc.RpcError) as err:
        list(observer.stub().GetFlows(request, timeout=10))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "source_ip" in err.value.details()


def test_follow_delivers_new_flows(observer: h.RunningObserver) -> None:
    stream = observer.stub().GetFlows(observer_pb2.GetFlowsRequest(follow=True), timeout=30)
    received: list[observer_pb2.GetFlowsResponse] = []
    done = threading.Event()

    def read() -> None:
        try:
            for resp in stream:
                received.append(resp)
                if len(received) == 3:
                    done.set()
                    return
        except grpc.RpcError as err:  # cancelled by the test on failure
            if err.code() != grpc.StatusCode.CANCELLED:  # type: ignore[attr-defined]
                raise

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        for port in (1, 2, 3):
            observer.push(h.event(src_port=port))
        assert done.wait(10), f"follower got {len(received)} of 3 flows"
    finally:
        stream.cancel()
        reader.join(5)
    assert [resp.flow.l4.TCP.source_port for resp in received] == [1, 2, 3]


def test_tiny_buffer_overrun_over_grpc(short_tmp: object) -> None:
    running = h.start_observer(short_tmp, capacity=16)  # type: ignore[arg-type]
    try:
        stream = running.stub().GetFlows(observer_pb2.GetFlowsRequest(follow=True), timeout=60)
        first = h.event(src_port=1)
        running.push(first)
        assert next(stream).flow.l4.TCP.source_port == 1
        # One batch far larger than the ring: the follower must lose most of it.
        burst = 5000
        running.push(*(h.event(src_port=2 + i % 60000) for i in range(burst)))
        delivered = lost = 0
        deadline = time.monotonic() + 30
        while delivered + lost < burst:
            assert time.monotonic() < deadline, f"delivered={delivered} lost={lost}"
            resp = next(stream)
            if resp.HasField("lost_events"):
                assert resp.lost_events.source == flow_pb2.HUBBLE_RING_BUFFER
                lost += resp.lost_events.num_events_lost
            else:
                delivered += 1
        stream.cancel()
        assert delivered + lost == burst and lost >= burst - 16 - 16
    finally:
        running.close()
        running.node.stop()


def test_health_and_reflection(observer: h.RunningObserver) -> None:
    channel = grpc.insecure_channel(observer.target)
    try:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "observer.Observer", "hubble.server.Observer"):
            reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        (reply,) = reflection.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10
        )
        names = {s.name for s in reply.list_services_response.service}
        assert {"observer.Observer", "peer.Peer", "grpc.health.v1.Health"} <= names
        (reply,) = reflection.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(file_containing_symbol="flow.Flow")]),
            timeout=10,
        )
        assert reply.file_descriptor_response.file_descriptor_proto
    finally:
        channel.close()


def test_peer_notify_announces_this_node(observer: h.RunningObserver) -> None:
    channel = grpc.insecure_channel(observer.target)
    try:
        stream = peer_pb2_grpc.PeerStub(channel).Notify(peer_pb2.NotifyRequest(), timeout=10)
        note = next(stream)
        assert note.name == h.NODE and note.type == peer_pb2.PEER_ADDED
        stream.cancel()
    finally:
        channel.close()


def test_tcp_needs_tls_or_explicit_plaintext() -> None:
    with pytest.raises(ServerConfigError, match="listen.tcp_address"):
        ListenConfig(tcp_address="127.0.0.1:0").validate()
    with pytest.raises(ServerConfigError, match="listen"):
        ListenConfig().validate()


def test_plaintext_tcp_is_logged(short_tmp: object, caplog: pytest.LogCaptureFixture) -> None:
    running = h.start_observer(short_tmp, tcp_address="127.0.0.1:0", plaintext_tcp=True)  # type: ignore[arg-type]
    try:
        assert running.node.tcp_port
        assert any("PLAINTEXT" in rec.getMessage() for rec in caplog.records)
        channel = grpc.insecure_channel(f"127.0.0.1:{running.node.tcp_port}")
        try:
            from septum.dataplane.observe.api.observer import observer_pb2_grpc

            stub = observer_pb2_grpc.ObserverStub(channel)
            assert (
                stub.ServerStatus(observer_pb2.ServerStatusRequest(), timeout=10).max_flows == 4095
            )
        finally:
            channel.close()
    finally:
        running.close()
        running.node.stop()


def test_a_port_in_use_is_named() -> None:
    import socket

    from septum.dataplane.observe.ring import FlowRing
    from septum.dataplane.observe.server import ObserverServer
    from septum.dataplane.observe.service import NodeIdentity, ObserverService

    service = ObserverService(FlowRing(h.decoder(), 16), NodeIdentity(h.NODE, ""))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        before = set(threading.enumerate())
        server = ObserverServer(
            service, ListenConfig(tcp_address=f"127.0.0.1:{port}", plaintext_tcp=True)
        )
        with pytest.raises(ServerConfigError, match=f"listen.tcp_address: .*127.0.0.1:{port}"):
            server.start()
    server.stop(0)
    left = [t.name for t in set(threading.enumerate()) - before if t.name == "observer-h2"]
    assert not left, f"front thread left after a failed start: {left}"
