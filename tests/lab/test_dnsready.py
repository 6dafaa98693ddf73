"""The DNS readiness probe `septum lab up` waits on: the query it builds, the replies it reads,
and a real exchange with a local UDP server standing in for CoreDNS."""

from __future__ import annotations

import socket
import struct
import threading

from septum.lab import dnsready


def _reply(query: bytes, answers: int, rcode: int = 0) -> bytes:
    query_id = struct.unpack("!H", query[:2])[0]
    return struct.pack("!HHHHHH", query_id, 0x8180 | rcode, 1, answers, 0, 0) + query[12:]


def test_the_query_asks_one_a_record_for_the_name() -> None:
    q = dnsready.query("kubernetes.default.svc.cluster.local", 0x1234)
    assert q[:2] == b"\x12\x34" and q[4:6] == b"\x00\x01"  # id, one question
    assert b"\x0akubernetes\x07default\x03svc\x07cluster\x05local\x00" in q
    assert q.endswith(b"\x00\x01\x00\x01")  # A, IN


def test_only_an_answer_to_our_query_counts() -> None:
    q = dnsready.query("a.b", 7)
    assert dnsready.answers(_reply(q, 1), 7) == 1
    assert dnsready.answers(_reply(q, 1), 8) == 0  # another query's reply
    assert dnsready.answers(_reply(q, 0, rcode=3), 7) == 0  # NXDOMAIN
    assert dnsready.answers(q, 7) == 0  # a query, not a reply
    assert dnsready.answers(b"\x00", 7) == 0


def test_resolves_against_a_real_udp_server_and_not_against_a_silent_one() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind(("127.0.0.1", 0))
        port = server.getsockname()[1]

        def answer_once() -> None:
            data, peer = server.recvfrom(512)
            server.sendto(_reply(data, 1), peer)

        thread = threading.Thread(target=answer_once)
        thread.start()
        assert dnsready.resolves("kubernetes.default.svc.cluster.local", "127.0.0.1", port=port)
        thread.join(5)
    # Nothing listens on port 53 of this unused loopback address: no answer in time.
    assert not dnsready.resolves("x.y", "127.0.0.77", timeout_s=0.3)
