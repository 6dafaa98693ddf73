"""The HTTP/2 front frame by frame: request size, deadlines, long scans, stop, relayed windows.

A raw HTTP/2 client (h2 over a blocking socket) sends the frames and sets the windows that
no gRPC library lets a test choose; test_h2front.py has the grpcio and hubble CLI views of
the same front.
"""

from __future__ import annotations

import asyncio
import asyncio.base_events
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings
import observe_helpers as h
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2

from septum.dataplane.observe import h2link as hl
from septum.dataplane.observe.api.observer import observer_pb2
from septum.dataplane.observe.api.peer import peer_pb2, peer_pb2_grpc
from septum.dataplane.observe.h2flows import MAX_REQUEST_BYTES, SCAN_PER_TURN
from septum.dataplane.observe.query import FlowQuery, Paused, stream_flows


class RawClient:
    """A raw HTTP/2 client connection to the front (blocking socket, h2 state)."""

    def __init__(self, socket_path: Path, window: int = 65535) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(10)
        self.sock.connect(str(socket_path))
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        # Reads what the server sends after a GOAWAY (plain h2 calls that an error).
        self.conn.state_machine = hl._GracefulStateMachine()
        self.conn.local_settings = h2.settings.Settings(
            client=True, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window}
        )
        self.conn.initiate_connection()
        self.events: list[h2.events.Event] = []
        self.send()

    def send(self) -> None:
        self.sock.sendall(self.conn.data_to_send())

    def call(self, path: bytes, body: bytes | None, extra: list[tuple[bytes, bytes]]) -> int:
        """Open a stream; send one message and end the request, unless body is None."""
        sid = self.conn.get_next_available_stream_id()
        headers = [
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", path),
            (b":authority", b"localhost"),
            (b"content-type", b"application/grpc"),
            (b"te", b"trailers"),
            *extra,
        ]
        self.conn.send_headers(sid, headers)
        if body is not None:
            self.conn.send_data(sid, b"\x00" + len(body).to_bytes(4, "big") + body, True)
        self.send()
        return sid

    def read_until(self, what: str, done: Callable[[], bool], timeout_s: float = 10.0) -> None:
        """Read (acknowledging DATA) until done() holds; fail at the deadline."""
        deadline = time.monotonic() + timeout_s
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{what}: not after {timeout_s} s; saw {self.events[-5:]}")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(1 << 16)
            except TimeoutError:
                continue
            assert data, f"{what}: the server closed the connection"
            for event in self.conn.receive_data(data):
                self.events.append(event)
                if isinstance(event, h2.events.DataReceived):
                    self.conn.acknowledge_received_data(
                        event.flow_controlled_length, event.stream_id
                    )
            self.send()

    def ended(self, sid: int) -> bool:
        return any(
            isinstance(e, h2.events.StreamEnded | h2.events.StreamReset) and e.stream_id == sid
            for e in self.events
        )

    def headers_of(self, sid: int) -> dict[bytes, bytes]:
        """Response headers and trailers of a stream, merged."""
        out: dict[bytes, bytes] = {}
        for e in self.events:
            if isinstance(e, h2.events.ResponseReceived | h2.events.TrailersReceived):
                if e.stream_id == sid:
                    out.update(e.headers)
        return out

    def close(self) -> None:
        self.sock.close()


def test_deadline_before_the_request_message_is_a_trailers_only_deadline_exceeded(
    observer: h.RunningObserver,
) -> None:
    client = RawClient(observer.socket)
    try:
        sid = client.call(GET_FLOWS, None, [(b"grpc-timeout", b"100m")])
        client.read_until("the GetFlows answer", lambda: client.ended(sid))
        (response,) = [e for e in client.events if isinstance(e, h2.events.ResponseReceived)]
        answer = dict(response.headers)
        assert response.stream_ended is not None, "not a trailers-only response"
        assert answer[b":status"] == b"200" and answer[b"grpc-status"] == b"4"
        h.poll("open GetFlows streams", lambda: observer.node.server.active_flow_streams == 0)
    finally:
        client.close()


GET_FLOWS = b"/observer.Observer/GetFlows"


def _no_match_request(number: int) -> observer_pb2.GetFlowsRequest:
    request = observer_pb2.GetFlowsRequest(number=number)
    request.whitelist.add(source_port=["1"])  # every pushed flow has a port >= 1000
    return request


def test_backward_scan_for_the_last_n_gives_way_every_scan_per_turn(
    observer: h.RunningObserver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """number=N with a filter matching nothing walks back over the whole ring: in turns."""
    ring = observer.node.ring
    observer.push(*h.port_events(h.BURST))
    reads: list[int] = []
    entry = ring.entry

    def counted(seq: int) -> object:
        reads.append(seq)
        return entry(seq)

    monkeypatch.setattr(ring, "entry", counted)
    query = FlowQuery.from_request(_no_match_request(5))
    runs: list[int] = []  # entries read between two pauses
    since_pause = 0
    for item in stream_flows(ring, query, h.NODE, pause_every=SCAN_PER_TURN):
        assert isinstance(item, Paused), f"unexpected {item!r}"
        runs.append(len(reads) - since_pause)
        since_pause = len(reads)
    runs.append(len(reads) - since_pause)
    # The backward scan read every entry, newest first, then the forward scan all again.
    assert reads[: h.BURST] == list(range(h.BURST - 1, -1, -1))
    assert len(reads) == 2 * h.BURST
    assert max(runs) <= SCAN_PER_TURN, runs
    assert len(runs) >= 2 * h.BURST // SCAN_PER_TURN


def test_other_calls_complete_while_a_backward_scan_runs(short_tmp: Path) -> None:
    """A ServerStatus on another connection completes before the scan back is over."""
    capacity = 65535
    running = h.start_observer(short_tmp, capacity=capacity)
    ring = running.node.ring
    reads: list[int] = []
    other_done = threading.Event()
    entry = ring.entry

    def slowed(seq: int) -> object:
        # A moment per read until the other call is done: the walk back over the
        # full ring then outlasts that call by far, whatever a decode costs here.
        reads.append(seq)
        other_done.wait(0.0001)
        return entry(seq)

    scan = None
    try:
        running.push(*[h.event(src_port=1000 + i % 60000) for i in range(capacity)])
        status_stub = running.stub()
        status_stub.ServerStatus(observer_pb2.ServerStatusRequest(), timeout=30)  # connected
        ring.entry = slowed  # type: ignore[method-assign]
        scan = running.stub().GetFlows(_no_match_request(5), timeout=60)
        h.poll("the backward scan started", lambda: len(reads) > 0 or "no entry read yet")
        status = status_stub.ServerStatus(observer_pb2.ServerStatusRequest(), timeout=30)
        read_by_then = len(reads)
        other_done.set()
        assert status.max_flows == capacity
        assert read_by_then < capacity, "ServerStatus waited for the whole backward scan"
        assert running.node.server.active_flow_streams == 1
    finally:
        other_done.set()
        if scan is not None:
            scan.cancel()
        running.close()
        running.node.stop()


def _upstreams(running: h.RunningObserver) -> list[object]:
    front = running.node.server._front
    assert front is not None
    out: list[object] = []
    for connection in list(front.connections):
        out += [connection._upstream, *connection._draining]
    return [u for u in out if u is not None]


def _notify_in_thread(running: h.RunningObserver, outcome: list[object]) -> threading.Thread:
    channel = grpc.insecure_channel(running.target)
    running._channels.append(channel)
    stream = peer_pb2_grpc.PeerStub(channel).Notify(peer_pb2.NotifyRequest(), timeout=60)

    def read() -> None:
        try:
            for note in stream:
                outcome.append(note.name)
            outcome.append("OK")
        except grpc.RpcError as err:
            outcome.append(err.code())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    return reader


def test_stop_lets_an_open_relayed_stream_end_with_ok(short_tmp: Path) -> None:
    """peer.Peer/Notify (what hubble-relay holds) ends with status OK on stop, as on grpcio."""
    running = h.start_observer(short_tmp)
    outcome: list[object] = []
    stopped = False
    try:
        reader = _notify_in_thread(running, outcome)
        h.poll("the PEER_ADDED notification", lambda: outcome == [h.NODE] or outcome)
        stopped = True
        running.node.stop()
        reader.join(10)
        assert not reader.is_alive(), "Notify did not end when the server stopped"
        assert outcome == [h.NODE, "OK"]
    finally:
        running.close()
        if not stopped:
            running.node.stop()


def test_relayed_stream_outlives_a_goaway_from_grpcio(short_tmp: Path) -> None:
    """grpcio's GOAWAY (+ PING) means no new streams there, not the end of open ones."""
    running = h.start_observer(short_tmp)
    outcome: list[object] = []
    try:
        reader = _notify_in_thread(running, outcome)
        h.poll("the PEER_ADDED notification", lambda: outcome == [h.NODE] or outcome)
        grpcio_stopped = running.node.server._server.stop(30)  # GOAWAY and PING to the front
        h.poll(
            "GOAWAY seen by the front's upstream connection",
            lambda: any(getattr(u, "draining", False) for u in _upstreams(running)) or outcome,
        )
        running.node.ring.close()  # Notify's handler returns
        reader.join(10)
        assert outcome == [h.NODE, "OK"]
        assert grpcio_stopped.wait(10)
    finally:
        running.close()
        running.node.stop()


def test_stop_returns_with_an_idle_client_connected(
    short_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Since Python 3.12.1 Server.wait_closed() waits for every connection to close."""
    if sys.version_info < (3, 12, 1):

        async def wait_closed_312(self: asyncio.base_events.Server) -> None:
            waiters = self._waiters  # type: ignore[attr-defined]
            if waiters is None:
                return
            waiter = self._loop.create_future()  # type: ignore[attr-defined]
            waiters.append(waiter)
            await waiter

        monkeypatch.setattr(asyncio.base_events.Server, "wait_closed", wait_closed_312)
    running = h.start_observer(short_tmp)
    client = RawClient(running.socket)
    stopper = threading.Thread(target=running.node.stop, daemon=True)
    try:
        client.read_until(
            "SETTINGS acknowledged",
            lambda: any(isinstance(e, h2.events.SettingsAcknowledged) for e in client.events),
        )
        stopper.start()
        stopper.join(10)
        assert not stopper.is_alive(), "stop() waits for the idle client to leave"
    finally:
        client.close()
        if stopper.is_alive():
            stopper.join(10)
        elif not stopper.ident:
            running.node.stop()


def test_reset_relayed_calls_return_their_bytes_to_the_upstream_window(
    short_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Responses queued for a client that resets the call still count as read by grpcio."""
    monkeypatch.setattr(hl, "RECEIVE_WINDOW", 1 << 16)  # grpcio's window: a few responses
    running = h.start_observer(short_tmp)
    client = RawClient(running.socket, window=1)  # the front queues every response
    path = b"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
    body = reflection_pb2.ServerReflectionRequest(
        file_containing_symbol="observer.Observer"
    ).SerializeToString()
    try:
        front = running.node.server._front
        assert front is not None
        for _ in range(40):  # together far more than the upstream connection's window
            sid = client.call(path, body, [])
            h.poll(
                "a response queued on the front",
                lambda sid=sid: (
                    any(c.pending(sid) > 0 for c in list(front.connections)) or "nothing queued"
                ),
            )
            client.conn.reset_stream(sid)
            client.send()
        (connection,) = list(front.connections)
        upstream = connection._upstream
        assert upstream is not None

        def unaccounted() -> object:
            # Bytes grpcio sent that the upstream connection neither has in its
            # window nor will acknowledge: h2's own accounting (pinned h2).
            manager = upstream.conn._inbound_flow_control_window_manager
            missing = (
                manager.max_window_size - manager.current_window_size - manager._bytes_processed
            )
            return missing == 0 or missing

        h.poll("the upstream connection's receive window fully accounted for", unaccounted)
        client.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 65535})
        status = observer_pb2.ServerStatusRequest().SerializeToString()
        sid = client.call(b"/observer.Observer/ServerStatus", status, [])
        client.read_until("ServerStatus answered", lambda: client.ended(sid))
        assert client.headers_of(sid).get(b"grpc-status") == b"0"
    finally:
        client.close()
        running.node.stop()


def test_stop_says_goaway_first_and_lets_open_calls_run_through_the_grace_period(
    short_tmp: Path,
) -> None:
    """During the grace period: GOAWAY, new streams refused, open ones and PINGs served."""
    running = h.start_observer(short_tmp)
    client = RawClient(running.socket)
    stopper = threading.Thread(target=running.node.server.stop, args=(30.0,), daemon=True)
    try:
        watch_body = health_pb2.HealthCheckRequest(service="").SerializeToString()
        watch = client.call(b"/grpc.health.v1.Health/Watch", watch_body, [])
        client.read_until(
            "the first health update",
            lambda: any(isinstance(e, h2.events.DataReceived) for e in client.events),
        )
        stopper.start()
        client.read_until(
            "GOAWAY",
            lambda: any(isinstance(e, h2.events.ConnectionTerminated) for e in client.events),
        )
        (goaway,) = [e for e in client.events if isinstance(e, h2.events.ConnectionTerminated)]
        assert goaway.error_code == 0 and goaway.last_stream_id == watch
        assert stopper.is_alive() and not client.ended(watch)  # the watch still runs
        late = client.call(b"/observer.Observer/ServerStatus", b"", [])
        client.read_until("the late stream refused", lambda: client.ended(late))
        (refused,) = [
            e for e in client.events if isinstance(e, h2.events.StreamReset) and e.stream_id == late
        ]
        assert refused.error_code == h2.errors.ErrorCodes.REFUSED_STREAM
        client.conn.ping(b"septum!!")
        client.send()
        client.read_until(
            "the PING answered",
            lambda: any(isinstance(e, h2.events.PingAckReceived) for e in client.events),
        )
        assert not client.ended(watch)
    finally:
        client.close()  # the watch ends with its connection; stop() completes
        if stopper.ident is not None:
            stopper.join(30)
        running.close()
        running.node.stop()
    assert not stopper.is_alive()


def _padded_request(size: int) -> bytes:
    """A GetFlowsRequest(number=1) of exactly `size` bytes (an unknown field pads it)."""
    head = observer_pb2.GetFlowsRequest(number=1).SerializeToString()
    tag = b"\xc2\x3e"  # field 1000, length-delimited: ignored by the server
    for length_bytes in range(1, 6):
        pad = size - len(head) - len(tag) - length_bytes
        length = bytearray()
        value = pad
        while True:
            length.append((value & 0x7F) | (0x80 if value > 0x7F else 0))
            value >>= 7
            if not value:
                break
        if len(length) == length_bytes:
            return head + tag + bytes(length) + b"\x00" * pad
    raise AssertionError(f"no padding gives {size} bytes")


def test_request_limit_counts_the_message_not_its_prefix(observer: h.RunningObserver) -> None:
    observer.push(h.event(src_port=9))
    request = _padded_request(MAX_REQUEST_BYTES)
    assert len(request) == MAX_REQUEST_BYTES
    padded = observer_pb2.GetFlowsRequest.FromString(request)  # keeps the unknown field
    responses = list(observer.stub().GetFlows(padded, timeout=30))
    assert [r.flow.l4.TCP.source_port for r in responses] == [9]
    # One byte more is refused from its prefix alone, before the body arrives.
    client = RawClient(observer.socket)
    try:
        sid = client.call(GET_FLOWS, None, [])
        client.conn.send_data(sid, b"\x00" + (MAX_REQUEST_BYTES + 1).to_bytes(4, "big"))
        client.send()
        client.read_until("the refusal", lambda: client.ended(sid))
        refused = client.headers_of(sid)
        assert refused[b"grpc-status"] == b"8", refused
        assert str(MAX_REQUEST_BYTES + 1).encode() in refused[b"grpc-message"]
    finally:
        client.close()
