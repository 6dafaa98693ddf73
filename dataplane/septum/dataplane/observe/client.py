"""Connect to an Observer (Septum's or Hubble's) over a unix socket or TCP/TLS."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc
from septum.dataplane.observe.api.observer import observer_pb2_grpc

DEFAULT_SOCKET = "/var/run/septum/observer.sock"
DEFAULT_SERVER = f"unix://{DEFAULT_SOCKET}"


class ClientConfigError(ValueError):
    """A connection setting that cannot work; names the flag."""


@dataclass(frozen=True)
class ClientTLS:
    ca_files: tuple[Path, ...] = ()
    cert_file: Path | None = None
    key_file: Path | None = None
    server_name: str | None = None


def target(server: str) -> str:
    """`unix:///p`, `/p` (a socket path) or `host:port` -> a gRPC target."""
    if server.startswith("unix:"):
        return server
    if server.startswith("/"):
        return f"unix://{server}"
    for scheme in ("tls://", "http://", "https://"):
        if server.startswith(scheme):
            server = server[len(scheme) :]
    if ":" not in server:
        server = f"{server}:4244"
    return server


def channel(server: str, tls: ClientTLS | None = None) -> grpc.Channel:
    address = target(server)
    if tls is None:
        return grpc.insecure_channel(address)
    if address.startswith("unix:"):
        raise ClientConfigError("--tls: TLS is for TCP servers, not unix sockets")
    if (tls.cert_file is None) != (tls.key_file is None):
        raise ClientConfigError(
            "--tls-client-cert-file and --tls-client-key-file must be given together"
        )
    roots = b"".join(Path(p).read_bytes() for p in tls.ca_files) or None
    creds = grpc.ssl_channel_credentials(
        root_certificates=roots,
        private_key=Path(tls.key_file).read_bytes() if tls.key_file else None,
        certificate_chain=Path(tls.cert_file).read_bytes() if tls.cert_file else None,
    )
    options = [("grpc.ssl_target_name_override", tls.server_name)] if tls.server_name else []
    return grpc.secure_channel(address, creds, options=options)


def observer_stub(chan: grpc.Channel) -> observer_pb2_grpc.ObserverStub:
    return observer_pb2_grpc.ObserverStub(chan)  # type: ignore[no-untyped-call]
