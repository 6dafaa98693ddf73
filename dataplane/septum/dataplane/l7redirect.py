"""The node side of the L7 redirect (bpf/lib/proxy.h): what a proxy needs to take the
connections the datapath hands it and to open its upstream connections.

The datapath gives an allowed connection whose policy entry carries an L7 proxy port P to
the socket listening on loopback port P in the node's namespace (127.0.0.1 for IPv4, ::1
for IPv6), with the packet untouched: a TCP socket the proxy accepts has the original
destination as its own address (:func:`original_destination`); a UDP datagram carries it
in IP_ORIGDSTADDR (:func:`udp_original_destination`).  Without such a socket the
connection drops with SOCKET_LOOKUP_FAILED.  The packets reach the local stack through
policy routing on the TO_PROXY mark (:func:`install_proxy_routing`, once per node).

The proxy's upstream sockets carry the original source identity in their mark
(:func:`open_upstream`): the destination pod's ingress decides them as it would the client,
and an ingress proxy's upstream is not redirected to a proxy again.  Every function takes
the node's namespace; the sockets it returns stay in it whatever thread uses them."""

from __future__ import annotations

import ipaddress
import socket
import struct
import subprocess
from pathlib import Path
from typing import Final

from septum.dataplane import netns
from septum.dataplane.abi import ProxyMark
from septum.dataplane.errors import ProxyRedirectError

# Linux socket options Python's socket module does not name.
IP_TRANSPARENT: Final = 19
IPV6_TRANSPARENT: Final = 75
IP_RECVORIGDSTADDR: Final = 20
IPV6_RECVORIGDSTADDR: Final = 74
SO_MARK: Final = 36
_RT_RULE_PRIORITY: Final = 9  # before the main table (32766), as Cilium's proxy rules

MAX_IDENTITY: Final = (1 << 24) - 1
LOOPBACK: Final = {socket.AF_INET: "127.0.0.1", socket.AF_INET6: "::1"}


def _check_port(port: int) -> None:
    if not isinstance(port, int) or not 1 <= port <= 65535:
        raise ProxyRedirectError(f"port: {port!r} is not a port (1-65535)")


def _check_family(family: socket.AddressFamily) -> None:
    if family not in LOOPBACK:
        raise ProxyRedirectError(f"family: {family!r} is neither AF_INET nor AF_INET6")


def proxy_mark(identity: int, *, ingress: bool) -> int:
    """The SO_MARK of an upstream socket for a client of `identity` (1..2**24-1): the low 16
    bits of the identity in the mark's upper half, its bits 16-23 in the low byte."""
    if not isinstance(identity, int) or not 1 <= identity <= MAX_IDENTITY:
        raise ProxyRedirectError(
            f"identity: {identity!r} is not a security identity (1-{MAX_IDENTITY})"
        )
    magic = ProxyMark.MARK_FROM_PROXY_INGRESS if ingress else ProxyMark.MARK_FROM_PROXY_EGRESS
    return ((identity & 0xFFFF) << 16) | int(magic) | (identity >> 16)


def open_listener(
    port: int,
    family: socket.AddressFamily = socket.AF_INET,
    kind: socket.SocketKind = socket.SOCK_STREAM,
    *,
    ns: str | None = None,
    backlog: int = 1024,
) -> socket.socket:
    """The proxy's transparent socket on loopback `port` in namespace `ns`: the datapath
    assigns redirected packets to it.  IP_TRANSPARENT lets it answer from the original
    destination's address, which is not the node's."""
    _check_port(port)
    _check_family(family)
    if kind not in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        raise ProxyRedirectError(f"kind: {kind!r} is neither SOCK_STREAM nor SOCK_DGRAM")
    with netns.entered(ns):
        sock = socket.socket(family, kind)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_TRANSPARENT, 1)
            if kind == socket.SOCK_DGRAM:
                sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVORIGDSTADDR, 1)
        else:
            sock.setsockopt(socket.IPPROTO_IP, IP_TRANSPARENT, 1)
            if kind == socket.SOCK_DGRAM:
                sock.setsockopt(socket.IPPROTO_IP, IP_RECVORIGDSTADDR, 1)
        sock.bind((LOOPBACK[family], port))
        if kind == socket.SOCK_STREAM:
            # Accepted sockets inherit it.  asyncio sets it only on sockets made with
            # IPPROTO_TCP; without it Nagle holds a proxy's second write for the
            # client's delayed ACK (~40 ms per request).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.listen(backlog)
    except OSError as err:
        sock.close()
        raise ProxyRedirectError(
            f"port: cannot listen on {LOOPBACK[family]}:{port}: {err}"
        ) from err
    return sock


def original_destination(sock: socket.socket) -> tuple[str, int]:
    """(address, port) the client connected to, for a TCP socket accepted from a listener
    of :func:`open_listener`."""
    address, port = sock.getsockname()[:2]
    return str(address), int(port)


def udp_original_destination(ancdata: list[tuple[int, int, bytes]]) -> tuple[str, int]:
    """(address, port) a redirected datagram was sent to, from recvmsg's ancillary data on
    a UDP listener of :func:`open_listener` (a struct sockaddr_in / sockaddr_in6)."""
    for level, kind, data in ancdata:
        if level == socket.IPPROTO_IP and kind == IP_RECVORIGDSTADDR and len(data) >= 8:
            port, raw = struct.unpack_from("!H4s", data, 2)
            return socket.inet_ntop(socket.AF_INET, raw), port
        if level == socket.IPPROTO_IPV6 and kind == IPV6_RECVORIGDSTADDR and len(data) >= 24:
            port = struct.unpack_from("!H", data, 2)[0]
            return socket.inet_ntop(socket.AF_INET6, data[8:24]), port
    raise ProxyRedirectError("ancdata: no IP_ORIGDSTADDR (was the socket from open_listener?)")


def open_upstream(
    destination: str,
    identity: int,
    *,
    ingress: bool,
    kind: socket.SocketKind = socket.SOCK_STREAM,
    ns: str | None = None,
) -> socket.socket:
    """An unconnected socket for the proxy's connection to `destination`, marked with the
    client's `identity` (`ingress`: the proxy enforces the server pod's ingress rules, so
    the connection is not redirected again).  The caller connects it."""
    try:
        family = (
            socket.AF_INET6 if ipaddress.ip_address(destination).version == 6 else socket.AF_INET
        )
    except ValueError as err:
        raise ProxyRedirectError(f"destination: {destination!r} is not an IP address") from err
    mark = proxy_mark(identity, ingress=ingress)
    with netns.entered(ns):
        sock = socket.socket(family, kind)
    sock.setsockopt(socket.SOL_SOCKET, SO_MARK, mark)
    if kind == socket.SOCK_STREAM:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # see open_listener
    return sock


def open_transparent_reply(source: tuple[str, int], *, ns: str | None = None) -> socket.socket:
    """A UDP socket bound to `source` (a redirected datagram's original destination), to
    answer the client from the address it asked."""
    address, port = source
    _check_port(port)
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with netns.entered(ns):
        sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_TRANSPARENT, 1)
        else:
            sock.setsockopt(socket.IPPROTO_IP, IP_TRANSPARENT, 1)
        sock.bind((address, port))
    except OSError as err:
        sock.close()
        raise ProxyRedirectError(f"source: cannot bind {address}:{port}: {err}") from err
    return sock


def _ip(ns: str | None, *args: str, missing_ok: bool = False) -> bool:
    """Runs ip in the namespace; False when it failed and `missing_ok` (nothing to remove)."""
    command = ["ip", *(["-n", ns] if ns else []), *args]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode and not missing_ok:
        raise ProxyRedirectError(f"netns: {' '.join(command)} failed: {done.stderr.strip()}")
    return done.returncode == 0


def _rule_args(family: str) -> tuple[str, ...]:
    mark, mask = int(ProxyMark.MARK_TO_PROXY), int(ProxyMark.MARK_MAGIC_MASK)
    table = int(ProxyMark.PROXY_ROUTE_TABLE)
    return (
        family,
        "rule",
        "{}",
        "fwmark",
        f"{mark:#x}/{mask:#x}",
        "lookup",
        str(table),
        "pref",
        str(_RT_RULE_PRIORITY),
    )


_EARLY_DEMUX: Final = "/proc/sys/net/ipv4/ip_early_demux"


def early_demux(ns: str | None = None) -> str:
    """The namespace's net.ipv4.ip_early_demux ("1", the kernel's default, or "0")."""
    try:
        with netns.entered(ns):
            return Path(_EARLY_DEMUX).read_text().strip()
    except OSError as err:
        raise ProxyRedirectError(f"netns: cannot read {_EARLY_DEMUX}: {err}") from err


def set_early_demux(value: str, ns: str | None = None) -> None:
    if value not in ("0", "1"):
        raise ProxyRedirectError(f"early_demux: {value!r} is neither '0' nor '1'")
    try:
        with netns.entered(ns):
            Path(_EARLY_DEMUX).write_text(value)
    except OSError as err:
        raise ProxyRedirectError(f"netns: cannot write {_EARLY_DEMUX}: {err}") from err


def install_proxy_routing(ns: str | None = None) -> str | None:
    """Policy routing that delivers TO_PROXY-marked packets locally (fwmark 0x200/0xf00 ->
    table 2004: local default dev lo), IPv4 and IPv6; idempotent.  All or nothing: when a
    step fails (e.g. IPv6 disabled on lo), what the call installed is removed, the early
    demux put back, and ProxyRedirectError names the step.

    Also turns the namespace's early demux off (net.ipv4.ip_early_demux, which IPv6 reads
    too): a server-side (ingress) redirect crosses the node's stack before it is hairpinned,
    and early demux would hand such a packet to the proxy's own socket of the same 4-tuple
    there, before routing, and the forward path then drops a packet that has a socket.
    Returns the value it had before, for :func:`remove_proxy_routing` to put back; None when
    an earlier install's routing was still there (the value found then is that install's 0).

    And TO_PROXY-marked packets are not tracked by the namespace's conntrack (raw PREROUTING,
    CT --notrack, as Cilium's "NOTRACK for proxy traffic" rule): a hairpinned packet has lost
    its conntrack entry (the redirect scrubs it), so conntrack would track it a second time;
    after kube-proxy's DNAT of a ClusterIP connection to a backend on the same node, that
    second entry's reply tuple clashes with the first's and NAT remaps the client's port, so
    the proxy's SYN-ACK went to the wrong port and the client reset it. Untracked, the
    proxy's replies meet the first entry and are translated back as the server's would be."""
    earlier = remove_proxy_routing(ns)  # a rule added twice would stay twice
    before = early_demux(ns)
    try:
        set_early_demux("0", ns)
        table = str(int(ProxyMark.PROXY_ROUTE_TABLE))
        for family in ("-4", "-6"):
            _ip(ns, *[a.format("add") for a in _rule_args(family)])
            _ip(ns, family, "route", "replace", "local", "default", "dev", "lo", "table", table)
        for binary in ("iptables", "ip6tables"):
            _iptables(ns, binary, "-I", *_notrack_args())
    except ProxyRedirectError as err:
        remove_proxy_routing(ns, restore_early_demux=before)
        raise ProxyRedirectError(f"{err} (the proxy routing was rolled back)") from err
    return None if earlier else before


def remove_proxy_routing(ns: str | None = None, *, restore_early_demux: str | None = None) -> bool:
    """Remove the proxy routing and NOTRACK rule, whichever pieces are there, and set the
    early demux to `restore_early_demux` when given; whether any rule of it was found."""
    found = False
    table = str(int(ProxyMark.PROXY_ROUTE_TABLE))
    for family in ("-4", "-6"):
        found |= _ip(ns, *[a.format("del") for a in _rule_args(family)], missing_ok=True)
        _ip(ns, family, "route", "flush", "table", table, missing_ok=True)
    for binary in ("iptables", "ip6tables"):
        # one -D removes one copy; an agent killed between two installs may have left more
        for _ in range(_NOTRACK_MAX_COPIES):
            if not _iptables(ns, binary, "-D", *_notrack_args(), missing_ok=True):
                break
            found = True
    if restore_early_demux is not None:
        set_early_demux(restore_early_demux, ns)
    return found


_NOTRACK_COMMENT = "septum: NOTRACK for proxy traffic"
_NOTRACK_MAX_COPIES = 16


def _notrack_args() -> tuple[str, ...]:
    mark, mask = int(ProxyMark.MARK_TO_PROXY), int(ProxyMark.MARK_MAGIC_MASK)
    return (
        "PREROUTING", "-t", "raw", "-m", "mark", "--mark", f"{mark:#x}/{mask:#x}",
        "-m", "comment", "--comment", _NOTRACK_COMMENT, "-j", "CT", "--notrack",
    )  # fmt: skip


def _iptables(ns: str | None, binary: str, *args: str, missing_ok: bool = False) -> bool:
    """Runs iptables/ip6tables in the namespace (-w: kube-proxy may hold the xtables lock);
    False when it failed and `missing_ok` (the rule was not there)."""
    command = [*(["ip", "netns", "exec", ns] if ns else []), binary, "-w", "5", *args]
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise ProxyRedirectError(f"netns: {' '.join(command)}: {err}") from err
    if done.returncode and not missing_ok:
        raise ProxyRedirectError(f"netns: {' '.join(command)} failed: {done.stderr.strip()}")
    return done.returncode == 0
