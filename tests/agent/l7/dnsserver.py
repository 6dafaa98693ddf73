"""A small authoritative DNS server for tests: UDP and TCP, in a network namespace.

Answers from a fixed zone (name -> records) built with dnspython; NXDOMAIN otherwise.
Counts the queries it received, so a test can tell a REFUSED answer came from the
proxy and never reached the server.
"""

from __future__ import annotations

import socket
import struct
import threading
from dataclasses import dataclass

import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.rrset

from septum.dataplane import netns


@dataclass(frozen=True)
class Record:
    rdtype: str  # "A", "AAAA", "CNAME"
    value: str
    ttl: int = 60


def _fqdn(name: str) -> str:
    return name.lower().rstrip(".") + "."


def _absolute(record: Record) -> Record:
    if record.rdtype != "CNAME":
        return record
    return Record(record.rdtype, _fqdn(record.value), record.ttl)


class DnsServer:
    def __init__(self, ns: str, address: str, zone: dict[str, list[Record]], port: int = 53):
        self.zone = {_fqdn(name): [_absolute(r) for r in records] for name, records in zone.items()}
        self.queries: list[tuple[str, str]] = []  # (transport, name)
        self._lock = threading.Lock()
        with netns.entered(ns):
            self._udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self._tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._udp.bind((address, port))
        self._tcp.bind((address, port))
        self._tcp.listen(16)
        self._stopping = False
        self._threads = [
            threading.Thread(target=self._serve_udp, daemon=True),
            threading.Thread(target=self._serve_tcp, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def respond(self, wire: bytes, transport: str) -> bytes:
        query = dns.message.from_wire(wire)
        response = dns.message.make_response(query)
        name = query.question[0].name.to_text().lower()
        with self._lock:
            self.queries.append((transport, name))
        wanted = query.question[0].rdtype
        records = self.zone.get(name)
        if records is None:
            response.set_rcode(dns.rcode.NXDOMAIN)
            return bytes(response.to_wire())
        while records:
            cnames = [r for r in records if r.rdtype == "CNAME"]
            for record in records:
                if record.rdtype == "CNAME" or dns.rdatatype.from_text(record.rdtype) == wanted:
                    response.answer.append(
                        dns.rrset.from_text(name, record.ttl, "IN", record.rdtype, record.value)
                    )
            if not cnames:
                break
            name = cnames[0].value.lower()
            records = self.zone.get(name, [])
        return bytes(response.to_wire())

    def _serve_udp(self) -> None:
        while not self._stopping:
            try:
                data, peer = self._udp.recvfrom(65535)
            except OSError:
                return
            if self._stopping or not data:
                return
            self._udp.sendto(self.respond(data, "udp"), peer)

    def _serve_tcp(self) -> None:
        while not self._stopping:
            try:
                conn, _ = self._tcp.accept()
            except OSError:
                return
            with conn:
                try:
                    while True:
                        head = conn.recv(2, socket.MSG_WAITALL)
                        if len(head) < 2:
                            break
                        (length,) = struct.unpack("!H", head)
                        reply = self.respond(conn.recv(length, socket.MSG_WAITALL), "tcp")
                        conn.sendall(struct.pack("!H", len(reply)) + reply)
                except OSError:
                    pass

    def close(self) -> None:
        self._stopping = True
        for sock in (self._udp, self._tcp):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        for thread in self._threads:
            thread.join(timeout=5)


def query_from(
    ns: str, server: tuple[str, int], name: str, tcp: bool = False
) -> dns.message.Message:
    """Ask `server` for `name`'s A records from network namespace `ns` (a pod)."""
    query = dns.message.make_query(name, "A")
    kind = socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM
    with netns.entered(ns):
        sock = socket.socket(socket.AF_INET, kind)
    with sock:
        address, port = server
        if tcp:
            sock.settimeout(5)
            sock.connect(server)
            return dns.query.tcp(query, address, timeout=5, port=port, sock=sock)
        return dns.query.udp(query, address, timeout=5, port=port, sock=sock)
