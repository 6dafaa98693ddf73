"""Open connections from the datapath's conntrack entries keep expired addresses (grace)."""

from __future__ import annotations

import ipaddress
import socket

from septum.agent.l7.fqdncache import FqdnCache, FqdnConfig
from septum.agent.l7.fqdnconns import ConnectionActivity, open_connections
from septum.dataplane import abi

POD = "10.0.0.5"
PEER = ipaddress.ip_address("203.0.113.10")
OTHER = ipaddress.ip_address("203.0.113.11")


def _entry(src: str, dst: str, expires: int) -> tuple[abi.CtKey, abi.CtEntry]:
    key = abi.CtKey(ip_version=abi.IPVersion.V4, protocol=6)
    key.src_addr[:4] = socket.inet_aton(src)
    key.dst_addr[:4] = socket.inet_aton(dst)
    return key, abi.CtEntry(expires=expires)


def endpoint_of(address: str) -> str | None:
    return "app/client" if address == POD else None


def test_unexpired_entries_of_local_pods_either_orientation() -> None:
    entries = [
        _entry(POD, str(PEER), expires=200),
        _entry(str(OTHER), POD, expires=200),  # kept in the reply's orientation
        _entry(POD, "203.0.113.12", expires=50),  # expired
        _entry("10.9.9.9", str(PEER), expires=200),  # not a local pod
    ]
    assert open_connections(entries, 100, endpoint_of) == {
        ("app/client", PEER),
        ("app/client", OTHER),
    }


def test_expired_answer_kept_for_the_grace_after_its_connection() -> None:
    cache = FqdnCache(FqdnConfig(idle_connection_grace_s=30))
    cache.learn("app/client", "api.example.com", [(PEER, 10)], now=0.0)
    activity = ConnectionActivity()
    activity.sweep(open_connections([_entry(POD, str(PEER), 200)], 100, endpoint_of), now=20.0)
    assert not cache.expire(40.0, activity.last_active)  # TTL over, connection 20 s ago
    activity.sweep([], now=45.0)  # the connection is gone
    assert not cache.expire(50.0, activity.last_active)
    assert cache.expire(50.5, activity.last_active)
    activity.forget_before(50.5 - 30)
    assert activity.last_active("app/client", PEER) is None
