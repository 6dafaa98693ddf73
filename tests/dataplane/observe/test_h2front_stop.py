"""The HTTP/2 front's stop closes every connection it accepted, even those that arrive with it.

A connection accepted in the loop turn that begins the stop (or one still in
its TLS handshake) used to miss the front's list of connections to say GOAWAY
to and abort: it was left open and leaked when the loop closed (an "unclosed
transport" ResourceWarning at garbage collection). These tests hold the
front's loop while clients connect, so their accepts and the stop land in the
same loop turns, then check that every client sees its connection closed and
that nothing unclosed is collected.
"""

from __future__ import annotations

import datetime
import gc
import socket
import ssl
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import h2.config
import h2.connection
import observe_helpers as h
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from septum.dataplane.observe.api.observer import observer_pb2
from septum.dataplane.observe.h2front import H2Front, Listener
from septum.dataplane.observe.ring import FlowRing

CLIENTS = 16


def _front(short_tmp: Path, ssl_context: ssl.SSLContext | None = None) -> H2Front:
    front = H2Front(
        FlowRing(h.decoder()),
        lambda: h.NODE,
        str(short_tmp / "no-grpcio.sock"),  # nothing here is relayed
        [Listener(host="127.0.0.1", port=0, ssl_context=ssl_context)],
        max_streams=8,
    )
    front.start()
    return front


def _stop(front: H2Front, grace_s: float) -> None:
    front.ring.close()  # as ObserverServer.stop does: followers end
    front.stop(grace_s)


def _stop_while_busy(
    front: H2Front, monkeypatch: pytest.MonkeyPatch, while_held: Callable[[], None]
) -> None:
    """Hold the loop, run `while_held` (clients connect), queue the stop, then let go.

    The clients' accepts and the stop's first step then run in the same loop turns.
    """
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        held.set()
        release.wait(10)

    front.loop.call_soon_threadsafe(hold)
    assert held.wait(10)
    try:
        while_held()
    finally:
        queued = threading.Event()
        schedule = front.loop.call_soon_threadsafe

        def spy(*args: object, **kwargs: object) -> object:
            handle = schedule(*args, **kwargs)  # type: ignore[arg-type]
            queued.set()
            return handle

        monkeypatch.setattr(front.loop, "call_soon_threadsafe", spy)
        stopper = threading.Thread(target=_stop, args=(front, 0.0))
        stopper.start()
        queued.wait(10)  # the stop waits behind the held loop
        release.set()
        stopper.join(20)
        assert not stopper.is_alive(), "stop() did not return"


def _assert_all_closed(clients: list[socket.socket], timeout_s: float = 5.0) -> None:
    """Every client sees its connection end (EOF or reset), none is left hanging."""
    deadline = time.monotonic() + timeout_s
    hanging = []
    for index, client in enumerate(clients):
        try:
            while True:
                client.settimeout(max(0.01, deadline - time.monotonic()))
                if not client.recv(1 << 16):
                    break
        except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
            pass
        except TimeoutError:
            hanging.append(index)
    assert not hanging, f"connections {hanging} of {len(clients)} still open after stop()"


def _collected_resource_warnings() -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        gc.collect()
    return [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]


@pytest.fixture
def clients() -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    try:
        yield opened
    finally:
        for client in opened:
            client.close()


def _get_flows_request() -> bytes:
    """A client preface and one GetFlows call (not following), as raw bytes."""
    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding=None)
    )
    conn.initiate_connection()
    sid = conn.get_next_available_stream_id()
    conn.send_headers(
        sid,
        [
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", b"/observer.Observer/GetFlows"),
            (b":authority", b"localhost"),
            (b"content-type", b"application/grpc"),
            (b"te", b"trailers"),
        ],
    )
    request = observer_pb2.GetFlowsRequest(number=1).SerializeToString()
    conn.send_data(sid, b"\x00" + len(request).to_bytes(4, "big") + request, end_stream=True)
    return conn.data_to_send()


def test_connections_accepted_as_stop_begins_are_closed(
    short_tmp: Path, clients: list[socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    front = _front(short_tmp)
    port = front.bound_ports[0]

    def connect() -> None:
        for _ in range(CLIENTS):
            clients.append(socket.create_connection(("127.0.0.1", port), timeout=5))

    _stop_while_busy(front, monkeypatch, connect)
    _assert_all_closed(clients)
    del front
    assert _collected_resource_warnings() == []


def test_requests_sent_as_stop_begins_end_with_their_connections(
    short_tmp: Path, clients: list[socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    front = _front(short_tmp)
    port = front.bound_ports[0]
    request = _get_flows_request()

    def connect_and_call() -> None:
        for _ in range(CLIENTS):
            client = socket.create_connection(("127.0.0.1", port), timeout=5)
            clients.append(client)
            client.sendall(request)

    _stop_while_busy(front, monkeypatch, connect_and_call)
    _assert_all_closed(clients)
    del front
    assert _collected_resource_warnings() == []


def test_connections_opened_in_a_tight_loop_during_stop_are_closed(
    short_tmp: Path, clients: list[socket.socket]
) -> None:
    front = _front(short_tmp)
    port = front.bound_ports[0]
    request = _get_flows_request()
    stopped = threading.Event()

    def hammer() -> None:
        while not stopped.is_set():
            try:
                client = socket.create_connection(("127.0.0.1", port), timeout=5)
            except OSError:  # refused once the listener is closed
                continue
            clients.append(client)
            if len(clients) % 2:
                try:
                    client.sendall(request)
                except OSError:
                    pass

    hammerer = threading.Thread(target=hammer)
    hammerer.start()
    try:
        h.poll("clients connected", lambda: len(clients) >= CLIENTS or len(clients))
        _stop(front, 0.2)
    finally:
        stopped.set()
        hammerer.join(10)
    _assert_all_closed(clients)
    del front
    assert _collected_resource_warnings() == []


def _self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "tls.crt", directory / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_a_client_stuck_in_its_tls_handshake_is_closed_by_stop(
    short_tmp: Path, clients: list[socket.socket]
) -> None:
    cert, key = _self_signed(short_tmp)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.set_alpn_protocols(["h2"])
    front = _front(short_tmp, context)
    port = front.bound_ports[0]
    for _ in range(4):  # connected, never says ClientHello
        clients.append(socket.create_connection(("127.0.0.1", port), timeout=5))
    accepted = front.connections  # from accept on, before any handshake
    h.poll("connections accepted", lambda: len(accepted) == 4 or len(accepted))
    started = time.monotonic()
    _stop(front, 0.0)
    assert time.monotonic() - started < 5, "stop() waited for the handshakes"
    _assert_all_closed(clients)
    del front
    assert _collected_resource_warnings() == []
