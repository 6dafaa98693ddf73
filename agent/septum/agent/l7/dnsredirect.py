"""The DNS proxy behind the datapath's redirect (septum.dataplane.l7redirect).

Pods send their queries to their DNS server; the datapath hands the ones a policy entry
marks for L7 to this proxy's transparent sockets on loopback, the original destination
intact. A UDP query's destination comes with the datagram (IP_ORIGDSTADDR) and the
answer goes back from that address, so the pod sees its server answer; a TCP
connection's own address is the destination. Upstream sockets carry the pod's identity
in their mark, so the datapath decides them as the pod's own traffic.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable

from septum.agent.l7.dnsproxy import DnsListener, DnsProxy, DnsRequest, Upstream, tcp_handler
from septum.dataplane import l7redirect
from septum.dataplane.errors import ProxyRedirectError

log = logging.getLogger(__name__)

# The security identity of a pod address (None: not a local pod: no upstream for it).
IdentityOf = Callable[[str], int | None]
_ANCILLARY = socket.CMSG_SPACE(64)


def marked_upstream(identity_of: IdentityOf, ns: str | None) -> Upstream:
    """Upstream sockets attributed to the asking pod (egress: never redirected again)."""

    def upstream(request: DnsRequest) -> socket.socket:
        identity = identity_of(request.client[0])
        if identity is None:
            raise OSError(f"{request.client[0]} is not a local endpoint")
        kind = socket.SOCK_DGRAM if request.transport == "udp" else socket.SOCK_STREAM
        sock = l7redirect.open_upstream(
            request.server[0], identity, ingress=False, kind=kind, ns=ns
        )
        sock.setblocking(False)
        return sock

    return upstream


class _RedirectedUdp:
    """Reads redirected datagrams; answers each from its original destination."""

    def __init__(self, proxy: DnsProxy, sock: socket.socket, ns: str | None) -> None:
        self._proxy = proxy
        self._sock = sock
        self._ns = ns
        self._loop = asyncio.get_running_loop()
        self._tasks: set[asyncio.Task[None]] = set()
        self._reply_sockets: dict[tuple[str, int], socket.socket] = {}
        sock.setblocking(False)
        self._loop.add_reader(sock.fileno(), self._readable)

    def _readable(self) -> None:
        while True:
            try:
                data, ancdata, _flags, peer = self._sock.recvmsg(65535, _ANCILLARY)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:
                log.warning("DNS proxy UDP socket: %s", err)
                return
            try:
                server = l7redirect.udp_original_destination(ancdata)
            except ProxyRedirectError as err:
                log.warning("redirected datagram from %s: %s", peer, err)
                continue
            request = DnsRequest((str(peer[0]), int(peer[1])), server, "udp")
            task = self._loop.create_task(self._reply(request, data))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _reply(self, request: DnsRequest, data: bytes) -> None:
        reply = await self._proxy.answer(request, data)
        if reply is None:
            return
        try:
            self._reply_socket(request.server).sendto(reply, request.client)
        except (OSError, ProxyRedirectError) as err:
            log.warning("DNS answer to %s: %s", request.client, err)

    def _reply_socket(self, server: tuple[str, int]) -> socket.socket:
        """One socket per DNS server address answers for it: a pod's few servers are
        asked again and again, and a socket per answer cost more than the answer."""
        sock = self._reply_sockets.get(server)
        if sock is None:
            sock = l7redirect.open_transparent_reply(server, ns=self._ns)
            sock.setblocking(False)
            self._reply_sockets[server] = sock
        return sock

    def close(self) -> None:
        self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
        for reply in self._reply_sockets.values():
            reply.close()
        for task in self._tasks:
            task.cancel()


async def serve_redirected(
    proxy: DnsProxy,
    port: int,
    *,
    ns: str | None = None,
    family: socket.AddressFamily = socket.AF_INET,
    tcp: bool = True,
) -> DnsListener:
    """The proxy on loopback `port` of the node namespace `ns`, over UDP (and TCP).

    Without `tcp`, only the UDP port is taken: the same port number's TCP listener may be
    another proxy's (the HTTP proxy's egress port: one egress L7 port for both)."""
    udp_sock = l7redirect.open_listener(port, family, socket.SOCK_DGRAM, ns=ns)
    server: asyncio.Server | None = None
    if tcp:
        try:
            tcp_sock = l7redirect.open_listener(port, family, socket.SOCK_STREAM, ns=ns)
        except BaseException:
            udp_sock.close()
            raise
        tcp_sock.setblocking(False)
        # A transparent TCP socket's own address is the destination the pod connected to.
        handler = tcp_handler(proxy, lambda client, local: local)
        server = await asyncio.start_server(handler, sock=tcp_sock)
    udp = _RedirectedUdp(proxy, udp_sock, ns)
    return DnsListener(udp, server, (l7redirect.LOOPBACK[family], port))


__all__ = ["IdentityOf", "marked_upstream", "serve_redirected"]
