"""The agent's Observer flags, checked and turned into the Observer's settings (no I/O but
checking that the TLS files exist).

TCP is mutual TLS as Hubble's (`--hubble-tls-cert-file/-key-file/-client-ca-files`), or
plaintext only when chosen with `--observer-insecure`; anything else is an
AgentConfigError naming the flags. When TLS is on, the agent advertises Cilium's kind of
server name, `<node>.<cluster>.hubble-grpc.septum.io`, which one wildcard certificate
(SAN `*.<cluster>.hubble-grpc.septum.io`) covers for every node.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from septum.agent.errors import AgentConfigError
from septum.dataplane.observe.peers import tls_server_name
from septum.dataplane.observe.server import ListenConfig, TLSFiles

TLS_FLAGS = "--observer-tls-cert-file/--observer-tls-key-file"
# The hosts that mean "every address of the node": such a listener is advertised at the
# node's InternalIP instead, which is where another node can reach it.
WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})


@dataclass(frozen=True)
class ObserverOptions:
    socket: Path | None = None
    address: str | None = None  # TCP host:port, e.g. ":4244"
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_client_ca_file: Path | None = None  # set: client certificates required (mTLS)
    insecure: bool = False  # plaintext TCP, chosen explicitly
    tls_server_name: str | None = None  # None: <node>.<cluster>.hubble-grpc.septum.io
    advertise_address: str | None = None  # None: the listener's, or InternalIP:port

    @property
    def tls(self) -> bool:
        return self.tls_cert_file is not None

    def check(self) -> None:
        """Raise AgentConfigError, naming the flags, when the flags cannot work together."""
        given_tls = [
            flag
            for flag, value in (
                ("--observer-tls-cert-file", self.tls_cert_file),
                ("--observer-tls-key-file", self.tls_key_file),
                ("--observer-tls-client-ca-file", self.tls_client_ca_file),
            )
            if value is not None
        ]
        if self.address is None:
            orphans = [*given_tls]
            orphans += ["--observer-insecure"] if self.insecure else []
            orphans += ["--observer-advertise-address"] if self.advertise_address else []
            if orphans:
                raise AgentConfigError(
                    f"{', '.join(orphans)}: only with a TCP listener (--observer-address)"
                )
        else:
            split_host_port(self.address, "--observer-address")
            if self.insecure and given_tls:
                raise AgentConfigError(
                    f"--observer-insecure: plaintext, but {', '.join(given_tls)} asks for TLS"
                )
            if not self.insecure and not given_tls:
                raise AgentConfigError(
                    f"--observer-address: TCP needs TLS ({TLS_FLAGS}, client certificates "
                    "required with --observer-tls-client-ca-file) or --observer-insecure for "
                    "plaintext"
                )
        if given_tls and self.tls_cert_file is None:
            raise AgentConfigError(f"--observer-tls-cert-file: TLS needs both {TLS_FLAGS}")
        if given_tls and self.tls_key_file is None:
            raise AgentConfigError(f"--observer-tls-key-file: TLS needs both {TLS_FLAGS}")
        for flag, path in (
            ("--observer-tls-cert-file", self.tls_cert_file),
            ("--observer-tls-key-file", self.tls_key_file),
            ("--observer-tls-client-ca-file", self.tls_client_ca_file),
        ):
            if path is not None and not path.is_file():
                raise AgentConfigError(f"{flag}: {path} is not a file")
        if self.tls_server_name is not None and not self.tls:
            raise AgentConfigError("--observer-tls-server-name: only with TLS")
        if self.advertise_address is not None:
            split_host_port(self.advertise_address, "--observer-advertise-address")

    def listen(self) -> ListenConfig:
        tls = (
            TLSFiles(self.tls_cert_file, self.tls_key_file, self.tls_client_ca_file)
            if self.tls_cert_file is not None and self.tls_key_file is not None
            else None
        )
        return ListenConfig(
            unix_socket=self.socket,
            tcp_address=self.address,
            tls=tls,
            plaintext_tcp=self.address is not None and self.insecure,
        )

    def server_name(self, node: str, cluster: str) -> str:
        """The TLS server name this node advertises ("" in plaintext)."""
        if not self.tls:
            return ""
        return self.tls_server_name or tls_server_name(node, cluster)

    def listens_everywhere(self) -> bool:
        return self.address is not None and (
            split_host_port(self.address, "--observer-address")[0] in WILDCARD_HOSTS
        )


def split_host_port(address: str, flag: str) -> tuple[str, int]:
    """("host", port) of `host:port` or `[v6]:port` (host may be empty: every address)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise AgentConfigError(f"{flag}: {address!r} is not host:port")
    return host.strip("[]"), int(port)


def join_host_port(host: str, port: int) -> str:
    """`host:port`, IPv6 in brackets (what the relay's address parser reads)."""
    try:
        v6 = ipaddress.ip_address(host).version == 6
    except ValueError:
        v6 = False
    return f"[{host}]:{port}" if v6 else f"{host}:{port}"
