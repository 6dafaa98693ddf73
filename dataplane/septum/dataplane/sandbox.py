"""Pods as network namespaces wired by veth pairs to a node namespace, and real traffic
between them: what the datapath tests, the demo and the benchmark run on.

Everything is done through pyroute2 (netlink) and sockets opened inside the namespaces
(a socket stays in the namespace it was created in), never by shelling out to ``ip``.
A pod gets a /32 (and /128) address on ``eth0`` and a default route via a link-local
gateway on the node side (169.254.1.1 / fe80::1 on every host veth), like Cilium's routing mode.
"""

from __future__ import annotations

import contextlib
import ipaddress
import random
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from pyroute2 import IPRoute
from pyroute2 import netns as pyroute2_netns

from septum.dataplane import netns

GATEWAY_V4: Final = "169.254.1.1"
GATEWAY_V6: Final = "fe80::1"
IFA_F_NODAD: Final = 0x02


def _write_sysctl(path: str, value: str) -> None:
    Path("/proc/sys", path).write_text(value)


@dataclass
class Pod:
    name: str  # network namespace name
    host_interface: str  # host-side veth in the node namespace
    ifindex: int  # of host_interface, in the node namespace
    ipv4: str
    ipv6: str | None = None


@dataclass
class Sandbox:
    """A node namespace plus pods; close() removes every namespace (and so every veth)."""

    prefix: str
    node_ns: str = ""
    pods: dict[str, Pod] = field(default_factory=dict)
    namespaces: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.node_ns = f"{self.prefix}-node"
        try:
            self._create_ns(self.node_ns)
            with netns.entered(self.node_ns):
                _write_sysctl("net/ipv4/ip_forward", "1")
                _write_sysctl("net/ipv6/conf/all/forwarding", "1")
        except BaseException:
            # No one holds a sandbox whose construction failed: remove what it made here.
            self.close()
            raise

    def _create_ns(self, name: str) -> None:
        pyroute2_netns.create(name)
        self.namespaces.append(name)
        with netns.entered(name), IPRoute() as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")

    def add_pod(self, short: str, ipv4: str, ipv6: str | None = None) -> Pod:
        name = f"{self.prefix}-{short}"
        host_if = f"{self.prefix}{short}"[:15]
        self._create_ns(name)
        with netns.entered(self.node_ns), IPRoute() as ipr:
            ipr.link("add", ifname=host_if, kind="veth", peer={"ifname": "eth0", "net_ns_fd": name})
            ifindex = ipr.link_lookup(ifname=host_if)[0]
            ipr.link("set", index=ifindex, state="up")
            # every host veth carries the pods' gateway address, so pods resolve it by ARP
            ipr.addr("add", index=ifindex, address=GATEWAY_V4, prefixlen=32)
            ipr.route("add", dst=f"{ipv4}/32", oif=ifindex)
            if ipv6:
                ipr.addr("add", index=ifindex, address=GATEWAY_V6, prefixlen=64, flags=IFA_F_NODAD)
                ipr.route("add", dst=f"{ipv6}/128", oif=ifindex, family=socket.AF_INET6)
        with netns.entered(name), IPRoute() as ipr:
            eth0 = ipr.link_lookup(ifname="eth0")[0]
            ipr.addr("add", index=eth0, address=ipv4, prefixlen=32)
            ipr.link("set", index=eth0, state="up")
            ipr.route("add", dst=f"{GATEWAY_V4}/32", oif=eth0, scope=253)
            ipr.route("add", dst="0.0.0.0/0", gateway=GATEWAY_V4, oif=eth0)
            if ipv6:
                ipr.addr(
                    "add", index=eth0, address=ipv6, prefixlen=128, flags=IFA_F_NODAD,
                    family=socket.AF_INET6,
                )  # fmt: skip
                ipr.route("add", dst="::/0", gateway=GATEWAY_V6, oif=eth0, family=socket.AF_INET6)
        pod = Pod(name, host_if, ifindex, ipv4, ipv6)
        self.pods[short] = pod
        return pod

    def add_outside(self, short: str, uplink: str, node_ip: str, outside_ips: list[str]) -> str:
        """An 'outside' namespace behind the node's uplink veth `uplink`; returns its name.
        Its addresses (TEST-NET ranges) reach the pods through the node."""
        name = f"{self.prefix}-{short}"
        self._create_ns(name)
        with netns.entered(self.node_ns), IPRoute() as ipr:
            ipr.link("add", ifname=uplink, kind="veth", peer={"ifname": "eth0", "net_ns_fd": name})
            index = ipr.link_lookup(ifname=uplink)[0]
            ipr.addr("add", index=index, address=node_ip, prefixlen=24)
            ipr.link("set", index=index, state="up")
        with netns.entered(name), IPRoute() as ipr:
            eth0 = ipr.link_lookup(ifname="eth0")[0]
            for address in outside_ips:
                ipr.addr("add", index=eth0, address=address, prefixlen=24)
            ipr.link("set", index=eth0, state="up")
            ipr.route("add", dst="0.0.0.0/0", gateway=node_ip, oif=eth0)
        return name

    def close(self) -> None:
        for name in reversed(self.namespaces):
            with contextlib.suppress(OSError, FileNotFoundError):
                pyroute2_netns.remove(name)
        self.namespaces.clear()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def sandbox_namespaces(prefix: str) -> list[str]:
    """Namespaces left behind with this prefix (tests assert there are none)."""
    return [n for n in pyroute2_netns.listnetns() if n.startswith(f"{prefix}-")]


# ---- traffic --------------------------------------------------------------------------


def _family(address: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET


def open_socket(ns: str, family: socket.AddressFamily, kind: int, proto: int = 0) -> socket.socket:
    with netns.entered(ns):
        return socket.socket(family, kind, proto)


class TcpServer:
    """Accepts connections in a pod and echoes what it receives, until closed."""

    def __init__(self, ns: str, address: str, port: int) -> None:
        self.sock = open_socket(ns, _family(address), socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((address, port))
        self.sock.listen(64)
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.accepted += 1
            with conn:
                conn.settimeout(2.0)
                with contextlib.suppress(OSError):
                    while data := conn.recv(65536):
                        conn.sendall(data)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


class UdpEchoServer:
    def __init__(self, ns: str, address: str, port: int) -> None:
        self.sock = open_socket(ns, _family(address), socket.SOCK_DGRAM)
        self.sock.bind((address, port))
        self.sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(65536)
            except (TimeoutError, OSError):
                continue
            with contextlib.suppress(OSError):
                self.sock.sendto(data, peer)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


def tcp_connect(ns: str, address: str, port: int, timeout_s: float = 5.0) -> bool:
    """True when a TCP connection from pod `ns` is established and echoes one message."""
    sock = open_socket(ns, _family(address), socket.SOCK_STREAM)
    sock.settimeout(timeout_s)
    try:
        sock.connect((address, port))
        sock.sendall(b"septum")
        return sock.recv(16) == b"septum"
    except OSError:
        return False
    finally:
        sock.close()


@contextlib.contextmanager
def tcp_connection(
    ns: str, address: str, port: int, timeout_s: float = 5.0
) -> Iterator[socket.socket]:
    """An established connection kept open for the block (raises if it cannot connect)."""
    sock = open_socket(ns, _family(address), socket.SOCK_STREAM)
    sock.settimeout(timeout_s)
    try:
        sock.connect((address, port))
        yield sock
    finally:
        sock.close()


def echo(sock: socket.socket, payload: bytes = b"ping") -> bool:
    try:
        sock.sendall(payload)
        return sock.recv(len(payload)) == payload
    except OSError:
        return False


def udp_request(ns: str, address: str, port: int, timeout_s: float = 5.0) -> bool:
    sock = open_socket(ns, _family(address), socket.SOCK_DGRAM)
    sock.settimeout(timeout_s)
    try:
        sock.sendto(b"septum", (address, port))
        data, _ = sock.recvfrom(64)
        return data == b"septum"
    except OSError:
        return False
    finally:
        sock.close()


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def ping(ns: str, address: str, timeout_s: float = 5.0) -> bool:
    """One ICMP/ICMPv6 echo from pod `ns`; True when the reply arrives."""
    v6 = _family(address) == socket.AF_INET6
    proto = socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP
    sock = open_socket(ns, _family(address), socket.SOCK_RAW, proto)
    ident = random.getrandbits(16)  # a new echo "connection" per call (conntrack keys on it)
    sequence = int(time.monotonic_ns() & 0xFFFF)
    request_type, reply_type = (128, 129) if v6 else (8, 0)
    header = struct.pack("!BBHHH", request_type, 0, 0, ident, sequence)
    payload = b"septum-ping"
    # the kernel fills the ICMPv6 checksum (it needs the pseudo header); ICMPv4 is ours
    checksum = 0 if v6 else _checksum(header + payload)
    packet = struct.pack("!BBHHH", request_type, 0, checksum, ident, sequence) + payload
    deadline = time.monotonic() + timeout_s
    try:
        sock.sendto(packet, (address, 0))
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            data, _ = sock.recvfrom(2048)
            icmp = data if v6 else data[(data[0] & 0x0F) * 4 :]
            if len(icmp) >= 8:
                kind, _, _, got_ident, got_sequence = struct.unpack("!BBHHH", icmp[:8])
                if kind == reply_type and (got_ident, got_sequence) == (ident, sequence):
                    return True
        return False
    except OSError:
        return False
    finally:
        sock.close()
