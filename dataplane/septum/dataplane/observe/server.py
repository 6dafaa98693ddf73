"""The Observer server: unix socket + TCP (TLS/mTLS), health, reflection.

The unix socket is for local tools (file permissions guard it, as Hubble's
does). The TCP listener (Hubble's port 4244) serves TLS from files, with
client-certificate verification when a client CA is given; plaintext TCP only
when the caller explicitly asks for it, and the server logs a warning then.

The public listeners belong to an HTTP/2 front (observe/h2front.py) that
serves GetFlows itself, many messages per DATA frame, and relays every other
RPC to a grpcio server listening on a private unix socket in a 0700
directory: grpcio keeps one message write in flight per stream, which caps a
follower far below what the ring can deliver (see docs/benchmarks.md).
"""

from __future__ import annotations

import logging
import os
import shutil
import ssl
import tempfile
import time
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from septum.dataplane.observe.errors import ListenError
from septum.dataplane.observe.errors import ServerConfigError as ServerConfigError
from septum.dataplane.observe.h2front import H2Front, Listener
from septum.dataplane.observe.service import (
    HUBBLE_HEALTH_SERVICE,
    OBSERVER_SERVICE,
    PEER_SERVICE,
    ObserverService,
)

log = logging.getLogger(__name__)

DEFAULT_TCP_PORT = 4244


@dataclass(frozen=True)
class TLSFiles:
    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None  # set: mutual TLS, client certs required

    def _check_files(self) -> None:
        for name in ("cert_file", "key_file", "client_ca_file"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ServerConfigError(f"tls.{name}: {path} does not exist")

    def credentials(self) -> grpc.ServerCredentials:
        """The same settings as grpcio server credentials."""
        self._check_files()
        cert = Path(self.cert_file).read_bytes()
        key = Path(self.key_file).read_bytes()
        client_ca = Path(self.client_ca_file).read_bytes() if self.client_ca_file else None
        return grpc.ssl_server_credentials(
            [(key, cert)],
            root_certificates=client_ca,
            require_client_auth=client_ca is not None,
        )

    def ssl_context(self) -> ssl.SSLContext:
        """The front's TLS: TLS 1.2+, ALPN h2 (gRPC clients such as grpc-go require it)."""
        self._check_files()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(self.cert_file, self.key_file)
        except (OSError, ssl.SSLError) as err:
            raise ServerConfigError(
                f"tls.cert_file/tls.key_file: cannot load {self.cert_file}, {self.key_file}: {err}"
            ) from err
        if self.client_ca_file is not None:
            try:
                context.load_verify_locations(cafile=str(self.client_ca_file))
            except (OSError, ssl.SSLError) as err:
                raise ServerConfigError(
                    f"tls.client_ca_file: cannot load {self.client_ca_file}: {err}"
                ) from err
            context.verify_mode = ssl.CERT_REQUIRED
        context.set_alpn_protocols(["h2"])
        return context


@dataclass(frozen=True)
class ListenConfig:
    unix_socket: Path | None = None
    tcp_address: str | None = None  # "host:port", e.g. "0.0.0.0:4244"
    tls: TLSFiles | None = None
    plaintext_tcp: bool = False  # must be chosen explicitly; logged
    # Concurrent GetFlows calls (served by the front), and separately concurrent
    # other RPCs (each holds a grpcio worker thread); beyond it: RESOURCE_EXHAUSTED.
    max_streams: int = 64

    def validate(self) -> None:
        if self.unix_socket is None and self.tcp_address is None:
            raise ServerConfigError("listen: set unix_socket and/or tcp_address")
        if self.tcp_address is not None and self.tls is None and not self.plaintext_tcp:
            raise ServerConfigError(
                "listen.tcp_address: TCP needs tls (cert_file, key_file) "
                "or an explicit plaintext_tcp=True"
            )
        if self.tls is not None and self.plaintext_tcp:
            raise ServerConfigError("listen: tls and plaintext_tcp are mutually exclusive")


class ObserverServer:
    def __init__(self, service: ObserverService, listen: ListenConfig) -> None:
        listen.validate()
        self.service = service
        self.listen = listen
        self.tcp_port: int | None = None
        self._private_dir: Path | None = None
        self._front: H2Front | None = None
        # One worker per open stream: followers sleep on the ring, so this bounds
        # concurrent clients (Hubble relay + a few CLIs), not throughput.
        self._workers = futures.ThreadPoolExecutor(
            max_workers=listen.max_streams, thread_name_prefix="observer"
        )
        self._server = grpc.server(
            self._workers,
            handlers=service.handlers(),
            maximum_concurrent_rpcs=listen.max_streams,
            options=[("grpc.so_reuseport", 0)],
        )
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        reflection.enable_server_reflection(
            (OBSERVER_SERVICE, PEER_SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME),
            self._server,
        )

    @property
    def active_flow_streams(self) -> int:
        """GetFlows calls the front is serving now."""
        return self._front.active_flows if self._front is not None else 0

    def _listeners(self) -> tuple[list[Listener], str]:
        listen = self.listen
        listeners: list[Listener] = []
        mode = ""
        if listen.unix_socket is not None:
            path = Path(listen.unix_socket)
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.exists():
                path.unlink()  # a stale socket from a previous run
            listeners.append(Listener(unix_path=path, setting="listen.unix_socket"))
        if listen.tcp_address is not None:
            host, sep, port = listen.tcp_address.rpartition(":")
            if not sep or not port.isdigit():
                raise ServerConfigError(
                    f"listen.tcp_address: {listen.tcp_address!r} is not host:port"
                )
            host = host.strip("[]")
            context = listen.tls.ssl_context() if listen.tls is not None else None
            if listen.tls is not None:
                mode = "mutual TLS" if listen.tls.client_ca_file else "TLS"
            else:
                mode = "PLAINTEXT"
            listeners.append(
                Listener(
                    host=host, port=int(port), ssl_context=context, setting="listen.tcp_address"
                )
            )
        return listeners, mode

    def start(self) -> None:
        listen = self.listen
        listeners, mode = self._listeners()
        # grpcio serves only the front, on a socket in a directory only we can enter.
        self._private_dir = Path(tempfile.mkdtemp(prefix="septum-observer-"))
        private_socket = self._private_dir / "grpc.sock"
        self._server.add_insecure_port(f"unix:{private_socket}")
        self._server.start()
        front = H2Front(
            self.service.ring,
            lambda: self.service.node.name,
            str(private_socket),
            listeners,
            listen.max_streams,
        )
        try:
            front.start()
        except ListenError as err:
            self._server.stop(0).wait()
            shutil.rmtree(self._private_dir, ignore_errors=True)
            raise ServerConfigError(err.strerror) from err
        self._front = front
        if listen.tcp_address is not None:
            self.tcp_port = front.bound_ports[0]
            if mode == "PLAINTEXT":
                log.warning(
                    "Observer TCP listener %s is PLAINTEXT (explicitly chosen): flows are readable "
                    "by anyone who can reach it",
                    listen.tcp_address,
                )
            log.info("Observer listening on %s (%s)", listen.tcp_address, mode)
        for name in ("", OBSERVER_SERVICE, HUBBLE_HEALTH_SERVICE, PEER_SERVICE):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        if listen.unix_socket is not None:
            os.chmod(listen.unix_socket, 0o660)
            log.info("Observer listening on unix:%s", listen.unix_socket)

    def stop(self, grace_s: float = 1.0) -> None:
        self.health.enter_graceful_shutdown()
        self.service.ring.close()  # wakes every follower so its stream ends
        # The front first: its relayed calls (peer.Peer/Notify, agent events...)
        # end on the closed ring and reach their clients with their trailers
        # within the grace period. Stopping grpcio first would make it cancel
        # them when the grace ran out while the front still waited for them.
        deadline = time.monotonic() + grace_s
        if self._front is not None:
            self._front.stop(grace_s)
            self._front = None
        # What the front relayed has ended or was cancelled with its connection;
        # grpcio gets what is left of the grace period, not a second one.
        self._server.stop(max(0.0, deadline - time.monotonic())).wait()
        self._workers.shutdown(wait=True)  # grpcio leaves its executor's threads running
        if self._private_dir is not None:
            shutil.rmtree(self._private_dir, ignore_errors=True)
            self._private_dir = None
        if self.listen.unix_socket is not None:
            Path(self.listen.unix_socket).unlink(missing_ok=True)
