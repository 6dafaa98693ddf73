"""Whether cluster DNS answers: `septum lab up` returns only once it does.

Asked from a node's network namespace (where kube-proxy translates the kube-dns Service), with
a query for the API server's Service name, as a pod's first lookup would be. Run as
``python -m septum.lab.dnsready NAME SERVER`` inside the namespace: exit 0 when the server
answers NAME with at least one address, 1 otherwise. The query is built by hand (a dozen
bytes): the lab needs no resolver library for one A record.
"""

from __future__ import annotations

import os
import socket
import struct
import sys
from typing import Final

QUERY_NAME: Final = "kubernetes.default.svc.cluster.local"
TIMEOUT_S: Final = 1.0
_TYPE_A: Final = 1
_CLASS_IN: Final = 1


def query(name: str, query_id: int) -> bytes:
    """A recursive query for `name`'s A records."""
    header = struct.pack("!HHHHHH", query_id, 0x0100, 1, 0, 0, 0)
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split("."))
    return header + labels + b"\0" + struct.pack("!HH", _TYPE_A, _CLASS_IN)


def answers(reply: bytes, query_id: int) -> int:
    """How many answer records `reply` carries for query `query_id` (0: none, or an error)."""
    if len(reply) < 12:
        return 0
    reply_id, flags, _qd, an, _ns, _ar = struct.unpack("!HHHHHH", reply[:12])
    if reply_id != query_id or not flags & 0x8000 or flags & 0x000F:  # not our reply, or RCODE
        return 0
    return int(an)


def resolves(name: str, server: str, timeout_s: float = TIMEOUT_S, port: int = 53) -> bool:
    query_id = int.from_bytes(os.urandom(2), "big")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout_s)
        try:
            sock.sendto(query(name, query_id), (server, port))
            reply, _ = sock.recvfrom(4096)
        except OSError:
            return False
    return answers(reply, query_id) > 0


if __name__ == "__main__":
    sys.exit(0 if resolves(sys.argv[1], sys.argv[2]) else 1)
