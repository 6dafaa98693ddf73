"""Connect to an Observer (Septum's or Hubble's) over a unix socket or TCP/TLS.

Two steps, as the hubble CLI has them: `client_tls` turns the `--tls*` flags into settings
and refuses a combination that cannot work, without any I/O; `channel` then reads the
certificate files and dials. Every error names the flag at fault.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc

from septum.cli.hubble.errors import ClientConfigError
from septum.dataplane.observe.api.observer import observer_pb2_grpc

# The relay, as hubble's own default: `septum port-forward -n kube-system svc/septum-relay
# 4245:80` (or `cilium hubble port-forward`) makes it so. One node's agent: --server unix://...
DEFAULT_SERVER = "localhost:4245"
DEFAULT_TCP_PORT = 4244
# hubble dials with TLS when the server address carries this scheme, even without --tls.
TLS_SCHEME = "tls://"


@dataclass(frozen=True)
class ClientTLS:
    """What the client presents and trusts; a client certificate comes with its key."""

    ca_files: tuple[Path, ...] = ()
    cert_file: Path | None = None
    key_file: Path | None = None
    server_name: str | None = None

    def __post_init__(self) -> None:
        if self.cert_file is not None and self.key_file is None:
            raise ClientConfigError("--tls-client-cert-file: needs --tls-client-key-file")
        if self.key_file is not None and self.cert_file is None:
            raise ClientConfigError("--tls-client-key-file: needs --tls-client-cert-file")


def client_tls(
    server: str,
    *,
    tls: bool = False,
    allow_insecure: bool = False,
    ca_files: Sequence[str | Path] = (),
    cert_file: str | Path | None = None,
    key_file: str | Path | None = None,
    server_name: str | None = None,
) -> ClientTLS | None:
    """The TLS settings hubble's `--tls*` flags ask for, or None for plaintext.

    TLS is on with `--tls`, a `tls://` server, or any other `--tls-*` flag: giving a CA or a
    client certificate and then talking plaintext would only hide the mistake.
    """
    given = [
        flag
        for flag, value in (
            ("--tls", tls),
            ("--tls-allow-insecure", allow_insecure),
            ("--tls-ca-cert-files", ca_files),
            ("--tls-client-cert-file", cert_file),
            ("--tls-client-key-file", key_file),
            ("--tls-server-name", server_name),
        )
        if value
    ]
    if not given and not server.startswith(TLS_SCHEME):
        return None
    if target(server).startswith("unix:"):
        raise ClientConfigError(f"{given[0]}: TLS is for TCP servers, not unix sockets ({server})")
    if allow_insecure:
        # grpcio has no switch to skip verifying the server (grpc-go's InsecureSkipVerify).
        raise ClientConfigError(
            "--tls-allow-insecure: not supported by this client; "
            "trust the server's CA with --tls-ca-cert-files instead"
        )
    return ClientTLS(
        ca_files=tuple(Path(p) for p in ca_files),
        cert_file=Path(cert_file) if cert_file else None,
        key_file=Path(key_file) if key_file else None,
        server_name=server_name or None,
    )


def target(server: str) -> str:
    """`unix:///p`, `/p` (a socket path) or `[scheme://]host[:port]` -> a gRPC target."""
    if server.startswith("unix:"):
        return server
    if server.startswith("/"):
        return f"unix://{server}"
    for scheme in (TLS_SCHEME, "http://", "https://"):
        if server.startswith(scheme):
            server = server[len(scheme) :]
    if ":" not in server:
        server = f"{server}:{DEFAULT_TCP_PORT}"
    return server


def channel(server: str, tls: ClientTLS | None = None) -> grpc.Channel:
    """A channel to `server`: plaintext, or TLS with the files `tls` names (read here)."""
    address = target(server)
    if tls is None:
        return grpc.insecure_channel(address)
    creds, options = credentials(tls)
    return grpc.secure_channel(address, creds, options=list(options))


def credentials(
    tls: ClientTLS,
) -> tuple[grpc.ChannelCredentials, tuple[tuple[str, str], ...]]:
    """The channel credentials and options `tls` asks for (files read here); shared by the
    blocking channel above and `septum ui`'s asyncio one."""
    roots = b"".join(_read("--tls-ca-cert-files", path) for path in tls.ca_files) or None
    creds = grpc.ssl_channel_credentials(
        root_certificates=roots,
        private_key=_read("--tls-client-key-file", tls.key_file) if tls.key_file else None,
        certificate_chain=_read("--tls-client-cert-file", tls.cert_file) if tls.cert_file else None,
    )
    options = (("grpc.ssl_target_name_override", tls.server_name),) if tls.server_name else ()
    return creds, options


def _read(flag: str, path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise ClientConfigError(f"{flag}: cannot read {path}: {err.strerror}") from err


def observer_stub(chan: grpc.Channel) -> observer_pb2_grpc.ObserverStub:
    return observer_pb2_grpc.ObserverStub(chan)  # type: ignore[no-untyped-call]
