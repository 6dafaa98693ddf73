"""TLS and mutual TLS on the Observer's TCP listener, configured from files."""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import observe_helpers as h
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from septum.dataplane.observe.api.observer import observer_pb2, observer_pb2_grpc
from septum.dataplane.observe.api.peer import peer_pb2, peer_pb2_grpc
from septum.dataplane.observe.server import ServerConfigError, TLSFiles

SERVER_NAME = "sfl-node-1.hubble-grpc.cilium.io"


@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_cert: Path  # signed by a CA the server does not trust
    other_key: Path


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _issue(
    dir_: Path,
    stem: str,
    common: str,
    issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey | None,
    *,
    ca: bool = False,
    sans: list[x509.GeneralName] | None = None,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common))
        .issuer_name(issuer.subject if issuer else _name(common))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(issuer_key or key, hashes.SHA256())
    (dir_ / f"{stem}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(dir_ / f"{stem}.key", key)
    return cert, key


@pytest.fixture
def pki(short_tmp: Path) -> Pki:
    ca, ca_key = _issue(short_tmp, "ca", "sfl test CA", None, None, ca=True)
    sans: list[x509.GeneralName] = [
        x509.DNSName(SERVER_NAME),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    _issue(short_tmp, "server", SERVER_NAME, ca, ca_key, sans=sans)
    _issue(short_tmp, "client", "hubble-client", ca, ca_key)
    other_ca, other_key = _issue(short_tmp, "other-ca", "sfl rogue CA", None, None, ca=True)
    _issue(short_tmp, "other", "hubble-client", other_ca, other_key)
    d = short_tmp
    return Pki(
        d / "ca.crt",
        d / "server.crt",
        d / "server.key",
        d / "client.crt",
        d / "client.key",
        d / "other.crt",
        d / "other.key",
    )


@pytest.fixture
def mtls_observer(short_tmp: Path, pki: Pki) -> Iterator[h.RunningObserver]:
    tls = TLSFiles(pki.server_cert, pki.server_key, client_ca_file=pki.ca)
    running = h.start_observer(short_tmp, tcp_address="127.0.0.1:0", tls=tls)
    try:
        yield running
    finally:
        running.close()
        running.node.stop()


def _status(
    port: int, pki: Pki, cert: Path | None, key: Path | None
) -> observer_pb2.ServerStatusResponse:
    creds = grpc.ssl_channel_credentials(
        root_certificates=pki.ca.read_bytes(),
        private_key=key.read_bytes() if key else None,
        certificate_chain=cert.read_bytes() if cert else None,
    )
    channel = grpc.secure_channel(
        f"127.0.0.1:{port}", creds, options=[("grpc.ssl_target_name_override", SERVER_NAME)]
    )
    try:
        return observer_pb2_grpc.ObserverStub(channel).ServerStatus(
            observer_pb2.ServerStatusRequest(), timeout=10
        )
    finally:
        channel.close()


def test_mtls_accepts_the_right_client_certificate(
    mtls_observer: h.RunningObserver, pki: Pki
) -> None:
    assert mtls_observer.node.tcp_port
    status = _status(mtls_observer.node.tcp_port, pki, pki.client_cert, pki.client_key)
    assert status.max_flows == 4095


def test_mtls_refuses_a_client_without_certificate(
    mtls_observer: h.RunningObserver, pki: Pki
) -> None:
    assert mtls_observer.node.tcp_port
    with pytest.raises(grpc.RpcError) as err:
        _status(mtls_observer.node.tcp_port, pki, None, None)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_mtls_refuses_a_certificate_from_another_ca(
    mtls_observer: h.RunningObserver, pki: Pki
) -> None:
    assert mtls_observer.node.tcp_port
    with pytest.raises(grpc.RpcError) as err:
        _status(mtls_observer.node.tcp_port, pki, pki.other_cert, pki.other_key)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_plain_tls_without_client_ca(short_tmp: Path, pki: Pki) -> None:
    running = h.start_observer(
        short_tmp, tcp_address="127.0.0.1:0", tls=TLSFiles(pki.server_cert, pki.server_key)
    )
    try:
        assert running.node.tcp_port
        assert _status(running.node.tcp_port, pki, None, None).max_flows == 4095
    finally:
        running.close()
        running.node.stop()


def test_missing_certificate_file_is_named(short_tmp: Path) -> None:
    with pytest.raises(ServerConfigError, match="tls.cert_file"):
        TLSFiles(short_tmp / "nope.crt", short_tmp / "nope.key").credentials()


@pytest.mark.lab  # runs the Go-built hubble CLI
def test_real_hubble_cli_over_mtls(
    mtls_observer: h.RunningObserver, pki: Pki, hubble: Path
) -> None:
    import os
    import subprocess

    assert mtls_observer.node.tcp_port
    mtls_observer.push(h.event(src_port=43210))
    base = [
        str(hubble),
        "observe",
        "-o",
        "jsonpb",
        "--server",
        f"127.0.0.1:{mtls_observer.node.tcp_port}",
        "--tls",
        "--tls-server-name",
        SERVER_NAME,
        "--tls-ca-cert-files",
        str(pki.ca),
    ]
    env = {**os.environ, "HOME": str(pki.ca.parent)}
    ok = subprocess.run(
        [
            *base,
            "--tls-client-cert-file",
            str(pki.client_cert),
            "--tls-client-key-file",
            str(pki.client_key),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert ok.returncode == 0, ok.stderr
    assert '"source_port":43210' in ok.stdout
    refused = subprocess.run(
        [*base, "--timeout", "3s"], capture_output=True, text=True, timeout=60, env=env
    )
    assert refused.returncode != 0 and "43210" not in refused.stdout


def _channel(port: int, pki: Pki, cert: Path | None, key: Path | None) -> grpc.Channel:
    creds = grpc.ssl_channel_credentials(
        root_certificates=pki.ca.read_bytes(),
        private_key=key.read_bytes() if key else None,
        certificate_chain=cert.read_bytes() if cert else None,
    )
    return grpc.secure_channel(
        f"127.0.0.1:{port}", creds, options=[("grpc.ssl_target_name_override", SERVER_NAME)]
    )


def test_every_kind_of_rpc_over_mtls(mtls_observer: h.RunningObserver, pki: Pki) -> None:
    """GetFlows (served by the front) and relayed RPCs: health, reflection, streams."""
    assert mtls_observer.node.tcp_port
    mtls_observer.push(*(h.event(src_port=2000 + i) for i in range(500)))
    channel = _channel(mtls_observer.node.tcp_port, pki, pki.client_cert, pki.client_key)
    try:
        flows = observer_pb2_grpc.ObserverStub(channel).GetFlows(
            observer_pb2.GetFlowsRequest(number=500), timeout=10
        )
        assert [r.flow.l4.TCP.source_port for r in flows] == [2000 + i for i in range(500)]
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="hubble.server.Observer"), timeout=10
        )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        (listed,) = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10
        )
        names = {s.name for s in listed.list_services_response.service}
        assert {"observer.Observer", "peer.Peer", "grpc.health.v1.Health"} <= names
        note = next(peer_pb2_grpc.PeerStub(channel).Notify(peer_pb2.NotifyRequest(), timeout=10))
        assert note.name == h.NODE
    finally:
        channel.close()


def test_mtls_refuses_get_flows_and_health_without_certificate(
    mtls_observer: h.RunningObserver, pki: Pki
) -> None:
    assert mtls_observer.node.tcp_port
    channel = _channel(mtls_observer.node.tcp_port, pki, None, None)
    try:
        with pytest.raises(grpc.RpcError) as err:
            list(
                observer_pb2_grpc.ObserverStub(channel).GetFlows(
                    observer_pb2.GetFlowsRequest(number=1), timeout=5
                )
            )
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        with pytest.raises(grpc.RpcError) as err:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        channel.close()


def test_tls_listener_negotiates_http2_by_alpn(short_tmp: Path, pki: Pki) -> None:
    """grpc-go clients (the hubble CLI) refuse a TLS server that does not select "h2"."""
    import socket
    import ssl

    running = h.start_observer(
        short_tmp, tcp_address="127.0.0.1:0", tls=TLSFiles(pki.server_cert, pki.server_key)
    )
    try:
        assert running.node.tcp_port
        context = ssl.create_default_context(cafile=str(pki.ca))
        context.set_alpn_protocols(["h2", "http/1.1"])
        with socket.create_connection(("127.0.0.1", running.node.tcp_port), timeout=10) as raw:
            with context.wrap_socket(raw, server_hostname=SERVER_NAME) as tls:
                assert tls.selected_alpn_protocol() == "h2"
                assert tls.version() in ("TLSv1.2", "TLSv1.3")
    finally:
        running.close()
        running.node.stop()
