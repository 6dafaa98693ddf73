"""The HTTP/2 front: GetFlows framing and flow control, cancellation, stop, relayed RPCs.

Real sockets throughout: grpcio channels, the real hubble CLI, and a small
raw HTTP/2 client (h2 over a blocking socket) where a test needs to see the
frames themselves or to set windows no gRPC library lets a caller choose.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings
import observe_helpers as h
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from septum.dataplane.observe.api.observer import observer_pb2, observer_pb2_grpc


@dataclass
class RawCall:
    """What a raw HTTP/2 GetFlows call saw."""

    headers: dict[bytes, bytes] = field(default_factory=dict)
    trailers: dict[bytes, bytes] = field(default_factory=dict)
    messages: list[bytes] = field(default_factory=list)
    data_frames: int = 0
    max_frame: int = 0


def raw_get_flows(
    socket_path: Path,
    request: bytes,
    *,
    window: int = 1 << 24,
    max_frame: int = 16384,
    flags: bytes = b"\x00",
    extra_headers: list[tuple[bytes, bytes]] | None = None,
) -> RawCall:
    """One GetFlows call with chosen receive window and max frame size, read to its end."""
    sock = socket.socket(socket.AF_UNIX)
    sock.settimeout(20)
    sock.connect(str(socket_path))
    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding=None)
    )
    conn.local_settings = h2.settings.Settings(
        client=True,
        initial_values={
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window,
            h2.settings.SettingCodes.MAX_FRAME_SIZE: max_frame,
        },
    )
    conn.initiate_connection()
    if window > 65535:
        conn.increment_flow_control_window(window - 65535)
    sid = conn.get_next_available_stream_id()
    headers = [
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":path", b"/observer.Observer/GetFlows"),
        (b":authority", b"localhost"),
        (b"content-type", b"application/grpc"),
        (b"te", b"trailers"),
        *(extra_headers or []),
    ]
    conn.send_headers(sid, headers)
    conn.send_data(sid, flags + len(request).to_bytes(4, "big") + request, end_stream=True)
    call = RawCall()
    buffer = bytearray()
    try:
        sock.sendall(conn.data_to_send())
        ended = False
        while not ended:
            data = sock.recv(1 << 16)
            assert data, "server closed the connection mid-call"
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    call.headers = dict(event.headers)
                elif isinstance(event, h2.events.TrailersReceived):
                    call.trailers = dict(event.headers)
                elif isinstance(event, h2.events.DataReceived):
                    call.data_frames += 1
                    call.max_frame = max(call.max_frame, len(event.data))
                    buffer += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, sid)
                elif isinstance(event, h2.events.StreamEnded):
                    ended = True
                elif isinstance(event, h2.events.StreamReset):
                    raise AssertionError(f"stream reset by the server: {event.error_code}")
            sock.sendall(conn.data_to_send())
    finally:
        sock.close()
    while buffer:
        assert buffer[0] == 0, "the server compressed a message"
        length = int.from_bytes(buffer[1:5], "big")
        call.messages.append(bytes(buffer[5 : 5 + length]))
        del buffer[: 5 + length]
    if not call.trailers and b"grpc-status" in call.headers:  # trailers-only response
        call.trailers = call.headers
    return call


def _request(**fields: object) -> bytes:
    return observer_pb2.GetFlowsRequest(**fields).SerializeToString()  # type: ignore[arg-type]


def _source_ports(messages: list[bytes]) -> list[int]:
    return [observer_pb2.GetFlowsResponse.FromString(m).flow.l4.TCP.source_port for m in messages]


# ---- coalescing ---------------------------------------------------------------


def test_many_messages_share_data_frames_and_arrive_in_order(
    observer: h.RunningObserver,
) -> None:
    observer.push(*h.port_events(h.BURST))
    call = raw_get_flows(observer.socket, _request(number=h.BURST))
    assert call.trailers[b"grpc-status"] == b"0"
    assert call.headers[b"hubble-server-version"]
    assert _source_ports(call.messages) == [1000 + i for i in range(h.BURST)]
    # Coalesced: many messages per DATA frame, frames as large as the peer allows.
    assert call.data_frames < h.BURST / 20, f"{call.data_frames} DATA frames for {h.BURST} messages"
    assert call.max_frame == 16384


def test_many_messages_intact_and_in_order_with_grpcio(observer: h.RunningObserver) -> None:
    observer.push(*h.port_events(h.BURST))
    responses = list(observer.stub().GetFlows(_get(number=h.BURST), timeout=30))
    assert [r.flow.l4.TCP.source_port for r in responses] == [1000 + i for i in range(h.BURST)]
    assert all(r.node_name == h.NODE for r in responses)


def _get(**fields: object) -> observer_pb2.GetFlowsRequest:
    return observer_pb2.GetFlowsRequest(**fields)  # type: ignore[arg-type]


@pytest.mark.lab  # runs the Go-built hubble CLI
def test_many_messages_intact_and_in_order_with_hubble_cli(
    hubble: Path, observer: h.RunningObserver
) -> None:
    observer.push(*h.port_events(h.BURST))
    out = subprocess.run(
        [
            str(hubble),
            "observe",
            "-o",
            "jsonpb",
            "--last",
            str(h.BURST),
            "--server",
            observer.target,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "HOME": str(observer.socket.parent)},
    )
    assert out.returncode == 0, out.stderr
    ports = [
        json.loads(line)["flow"]["l4"]["TCP"]["source_port"] for line in out.stdout.splitlines()
    ]
    assert ports == [1000 + i for i in range(h.BURST)]


def test_narrow_filter_over_many_flows_pauses_and_resumes_in_order(
    observer: h.RunningObserver,
) -> None:
    """Long runs of filtered-out flows are scanned in turns (query.Paused), nothing lost."""
    observer.push(*h.port_events(h.BURST))
    wanted = [1000 + i for i in range(0, h.BURST, 700)]
    request = observer_pb2.GetFlowsRequest()
    request.whitelist.add(source_port=[str(p) for p in wanted])
    responses = list(observer.stub().GetFlows(request, timeout=30))
    assert [r.flow.l4.TCP.source_port for r in responses] == wanted


@pytest.mark.lab  # runs the Go-built hubble CLI
def test_hubble_cli_follower_gets_a_burst_intact_and_in_order(
    hubble: Path, observer: h.RunningObserver
) -> None:
    follower = subprocess.Popen(
        [str(hubble), "observe", "-f", "-o", "jsonpb", "--server", observer.target],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "HOME": str(observer.socket.parent)},
    )
    deadline = threading.Timer(30, follower.kill)  # a stuck follower ends the read loop
    deadline.start()
    ports = []
    try:
        h.poll("hubble's GetFlows open", lambda: observer.node.server.active_flow_streams == 1)
        observer.push(*h.port_events(h.BURST))
        assert follower.stdout is not None
        for line in follower.stdout:
            ports.append(json.loads(line)["flow"]["l4"]["TCP"]["source_port"])
            if len(ports) == h.BURST:
                break
    finally:
        deadline.cancel()
        follower.kill()
        follower.communicate()
    assert ports == [1000 + i for i in range(h.BURST)]


# ---- flow control -------------------------------------------------------------


def test_window_smaller_than_one_message_still_gets_every_flow(
    observer: h.RunningObserver,
) -> None:
    observer.push(*h.port_events(200))
    # 100-byte window and minimum frame size: every message crosses several frames
    # and several WINDOW_UPDATEs.
    call = raw_get_flows(observer.socket, _request(number=200), window=100, max_frame=16384)
    assert call.trailers[b"grpc-status"] == b"0"
    assert _source_ports(call.messages) == [1000 + i for i in range(200)]
    assert call.max_frame <= 100


def test_grpcio_client_with_a_small_window_gets_every_flow(observer: h.RunningObserver) -> None:
    observer.push(*h.port_events(h.BURST))
    channel = grpc.insecure_channel(
        observer.target,
        options=[
            ("grpc.http2.lookahead_bytes", 1024),
            ("grpc.http2.bdp_probe", 0),
            ("grpc.max_receive_message_length", 1 << 16),
        ],
    )
    try:
        stub = observer_pb2_grpc.ObserverStub(channel)
        responses = list(stub.GetFlows(_get(number=h.BURST), timeout=60))
    finally:
        channel.close()
    assert [r.flow.l4.TCP.source_port for r in responses] == [1000 + i for i in range(h.BURST)]


# ---- errors -------------------------------------------------------------------


def test_invalid_filter_is_a_trailers_only_invalid_argument(observer: h.RunningObserver) -> None:
    request = observer_pb2.GetFlowsRequest()
    request.blacklist.add(destination_ip=["not an ip"])
    call = raw_get_flows(observer.socket, request.SerializeToString())
    assert call.messages == [] and call.data_frames == 0
    assert call.trailers[b"grpc-status"] == b"3"
    assert b"blacklist[0].destination_ip" in call.trailers[b"grpc-message"]
    assert observer.node.server.active_flow_streams == 0


def test_compressed_request_is_unimplemented(observer: h.RunningObserver) -> None:
    call = raw_get_flows(
        observer.socket, _request(), flags=b"\x01", extra_headers=[(b"grpc-encoding", b"gzip")]
    )
    assert call.trailers[b"grpc-status"] == b"12"
    assert b"gzip" in call.trailers[b"grpc-message"]
    assert call.headers[b"grpc-accept-encoding"] == b"identity"


def test_grpc_timeout_ends_a_follower_on_the_server(observer: h.RunningObserver) -> None:
    call = raw_get_flows(
        observer.socket, _request(follow=True), extra_headers=[(b"grpc-timeout", b"200m")]
    )
    assert call.trailers[b"grpc-status"] == b"4"
    assert observer.node.server.active_flow_streams == 0


# ---- cancellation and stop ------------------------------------------------------


def _follow_in_thread(
    stub: observer_pb2_grpc.ObserverStub, received: list[int]
) -> tuple[grpc.Future, threading.Thread, list[BaseException]]:
    stream = stub.GetFlows(_get(follow=True), timeout=60)
    errors: list[BaseException] = []

    def read() -> None:
        try:
            for resp in stream:
                received.append(resp.flow.l4.TCP.source_port)
        except grpc.RpcError as err:
            errors.append(err)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    return stream, reader, errors


def test_client_cancel_frees_the_server_stream(observer: h.RunningObserver) -> None:
    received: list[int] = []
    stream, reader, errors = _follow_in_thread(observer.stub(), received)
    try:
        h.poll("open GetFlows streams", lambda: observer.node.server.active_flow_streams == 1)
        observer.push(*h.port_events(50))
        h.poll("flows received", lambda: len(received) == 50 or len(received))
    finally:
        stream.cancel()
        reader.join(10)
    assert not reader.is_alive()
    assert [e.code() for e in errors] == [grpc.StatusCode.CANCELLED]  # type: ignore[attr-defined]
    h.poll("open GetFlows streams", lambda: observer.node.server.active_flow_streams == 0 or "open")
    # The ring does not remember the departed reader: new flows still go to new ones.
    observer.push(h.event(src_port=7))
    (last,) = observer.stub().GetFlows(_get(number=1), timeout=10)
    assert last.flow.l4.TCP.source_port == 7


def _server_threads(before: set[threading.Thread]) -> list[str]:
    """Threads started since `before` that belong to an Observer server."""
    return [
        t.name
        for t in threading.enumerate()
        if t not in before and (t.name == "observer-h2" or t.name.startswith("observer_"))
    ]


def test_stop_ends_an_open_follower_promptly_and_leaves_no_threads(short_tmp: Path) -> None:
    before = set(threading.enumerate())
    running = h.start_observer(short_tmp)
    received: list[int] = []
    stopped = False
    try:
        stream, reader, errors = _follow_in_thread(running.stub(), received)
        running.push(h.event(src_port=5))
        h.poll("first flow", lambda: received == [5] or received)
        started = time.monotonic()
        stopped = True
        running.node.stop()
        reader.join(10)
        assert not reader.is_alive(), "the follower did not end when the server stopped"
        assert time.monotonic() - started < 5
        assert errors == []  # ended with status OK: the server has no more flows
    finally:
        running.close()
        if not stopped:
            running.node.stop()
    assert not _server_threads(before), f"threads left running: {_server_threads(before)}"
    assert not running.socket.exists()


def test_too_many_followers_are_refused_with_resource_exhausted(short_tmp: Path) -> None:
    running = h.start_observer(short_tmp, max_streams=2)
    streams = []
    try:
        stub = running.stub()
        for _ in range(2):
            streams.append(stub.GetFlows(_get(follow=True), timeout=30))
        for s in streams:
            s.initial_metadata()  # both are open on the server
        h.poll("open GetFlows streams", lambda: running.node.server.active_flow_streams == 2)
        with pytest.raises(grpc.RpcError) as err:
            list(stub.GetFlows(_get(follow=True), timeout=10))
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "max_streams" in err.value.details()
    finally:
        for s in streams:
            s.cancel()
        running.close()
        running.node.stop()


# ---- relayed RPCs ---------------------------------------------------------------


def test_relayed_rpcs_carry_metadata_and_deadlines(observer: h.RunningObserver) -> None:
    channel = grpc.insecure_channel(observer.target)
    try:
        health = health_pb2_grpc.HealthStub(channel)
        reply, call = health.Check.with_call(
            health_pb2.HealthCheckRequest(service="observer.Observer"),
            timeout=10,
            metadata=(("x-septum-test", "1"),),
        )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as err:
            health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=10)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        # A streaming relayed call that outlives its deadline ends with DEADLINE_EXCEEDED.
        watch = health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=0.5)
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as err:
            next(watch)
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    finally:
        channel.close()


def test_relayed_stream_cancel_reaches_grpcio(short_tmp: Path) -> None:
    """A cancelled relayed follower (GetAgentEvents) frees its grpcio worker."""
    running = h.start_observer(short_tmp, max_streams=2)
    try:
        stub = running.stub()
        calls = [
            stub.GetAgentEvents(observer_pb2.GetAgentEventsRequest(follow=True), timeout=60)
            for _ in range(2)
        ]
        for c in calls:
            c.initial_metadata()  # both hold a grpcio worker now
        for c in calls:
            c.cancel()

        def status() -> object:
            try:
                return stub.ServerStatus(observer_pb2.ServerStatusRequest(), timeout=5).max_flows
            except grpc.RpcError as err:
                return err.code()  # RESOURCE_EXHAUSTED while the followers hold the workers

        h.poll("ServerStatus after cancelling the followers", lambda: status() == 4095 or status())
    finally:
        running.close()
        running.node.stop()


def test_relayed_request_larger_than_the_upstream_window(observer: h.RunningObserver) -> None:
    """1 MiB of request DATA crosses grpcio's 64 KiB initial window through the relay."""
    channel = grpc.insecure_channel(observer.target)
    try:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        name = "x" * (1 << 20)
        requests = [
            reflection_pb2.ServerReflectionRequest(file_by_filename=name),
            reflection_pb2.ServerReflectionRequest(list_services=""),
        ]
        missing, listed = stub.ServerReflectionInfo(iter(requests), timeout=30)
        assert missing.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]
        assert len(missing.original_request.file_by_filename) == 1 << 20
        assert "observer.Observer" in {s.name for s in listed.list_services_response.service}
    finally:
        channel.close()
