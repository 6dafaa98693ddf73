"""The Observer gRPC server: unix socket + TCP (TLS/mTLS), health, reflection.

The unix socket is for local tools (file permissions guard it, as Hubble's
does). The TCP listener (Hubble's port 4244) serves TLS from files, with
client-certificate verification when a client CA is given; plaintext TCP only
when the caller explicitly asks for it, and the server logs a warning then.
"""

from __future__ import annotations

import logging
import os
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from septum.dataplane.observe.service import (
    HUBBLE_HEALTH_SERVICE,
    OBSERVER_SERVICE,
    PEER_SERVICE,
    ObserverService,
)

log = logging.getLogger(__name__)

DEFAULT_TCP_PORT = 4244


class ServerConfigError(ValueError):
    """A listener setting that cannot work; the message names the setting."""


@dataclass(frozen=True)
class TLSFiles:
    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None  # set: mutual TLS, client certs required

    def credentials(self) -> grpc.ServerCredentials:
        for name in ("cert_file", "key_file", "client_ca_file"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ServerConfigError(f"tls.{name}: {path} does not exist")
        cert = Path(self.cert_file).read_bytes()
        key = Path(self.key_file).read_bytes()
        client_ca = Path(self.client_ca_file).read_bytes() if self.client_ca_file else None
        return grpc.ssl_server_credentials(
            [(key, cert)],
            root_certificates=client_ca,
            require_client_auth=client_ca is not None,
        )


@dataclass(frozen=True)
class ListenConfig:
    unix_socket: Path | None = None
    tcp_address: str | None = None  # "host:port", e.g. "0.0.0.0:4244"
    tls: TLSFiles | None = None
    plaintext_tcp: bool = False  # must be chosen explicitly; logged
    max_streams: int = 64  # concurrent RPCs (each open stream holds a worker thread)

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
        # One worker per open stream: followers sleep on the ring, so this bounds
        # concurrent clients (Hubble relay + a few CLIs), not throughput.
        self._server = grpc.server(
            futures.ThreadPoolExecutor(
                max_workers=listen.max_streams, thread_name_prefix="observer"
            ),
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

    def start(self) -> None:
        listen = self.listen
        if listen.unix_socket is not None:
            path = Path(listen.unix_socket)
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.exists():
                path.unlink()  # a stale socket from a previous run
            self._server.add_insecure_port(f"unix:{path}")
        if listen.tcp_address is not None:
            if listen.tls is not None:
                port = self._server.add_secure_port(listen.tcp_address, listen.tls.credentials())
                mode = "mutual TLS" if listen.tls.client_ca_file else "TLS"
            else:
                port = self._server.add_insecure_port(listen.tcp_address)
                mode = "PLAINTEXT"
                log.warning(
                    "Observer TCP listener %s is PLAINTEXT (explicitly chosen): flows are readable "
                    "by anyone who can reach it",
                    listen.tcp_address,
                )
            if port == 0:
                raise ServerConfigError(f"listen.tcp_address: cannot bind {listen.tcp_address}")
            self.tcp_port = port
            log.info("Observer listening on %s (%s)", listen.tcp_address, mode)
        self._server.start()
        for name in ("", OBSERVER_SERVICE, HUBBLE_HEALTH_SERVICE, PEER_SERVICE):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        if listen.unix_socket is not None:
            os.chmod(listen.unix_socket, 0o660)
            log.info("Observer listening on unix:%s", listen.unix_socket)

    def stop(self, grace_s: float = 1.0) -> None:
        self.health.enter_graceful_shutdown()
        self.service.ring.close()  # wakes every follower so its stream ends
        self._server.stop(grace_s).wait()
        if self.listen.unix_socket is not None:
            Path(self.listen.unix_socket).unlink(missing_ok=True)
