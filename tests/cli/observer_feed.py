"""A real Observer in this process for the what-if tests: a `NodeObserver` on a free
localhost port, fed synthetic flow events through a `FeedSource`, metadata from a
`StaticMetadata` (as the agent fills it from the cluster). Real gRPC, real protobuf."""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from septum.dataplane.observe import record
from septum.dataplane.observe.metadata import EndpointInfo, StaticMetadata
from septum.dataplane.observe.node import NodeObserver, ObserveConfig
from septum.dataplane.observe.server import ListenConfig
from septum.dataplane.observe.sources import FeedSource

NODE = "cli-node"
TCP, UDP = 6, 17
FORWARDED, DROPPED = 1, 2


def _addr(ip: str) -> bytes:
    return ipaddress.ip_address(ip).packed.ljust(16, b"\0")


def event(
    src_ip: str,
    dst_ip: str,
    dst_port: int,
    *,
    src_identity: int = 2,
    dst_identity: int = 2,
    endpoint_id: int = 0,
    protocol: int = TCP,
    verdict: int = FORWARDED,
    is_reply: bool = False,
    src_port: int = 40000,
) -> bytes:
    """One datapath flow event (a TCP SYN by default, seen at the destination's ingress)."""
    return record.pack(
        time_ns=time.clock_gettime_ns(time.CLOCK_BOOTTIME),
        bytes=74,
        packets=1,
        src_addr=_addr(src_ip),
        dst_addr=_addr(dst_ip),
        src_identity=src_identity,
        dst_identity=dst_identity,
        endpoint_id=endpoint_id,
        src_port=src_port,
        dst_port=dst_port,
        protocol=protocol,
        tcp_flags=0x12 if is_reply else 0x02,
        is_reply=int(is_reply),
        ip_version=2 if ":" in src_ip else 1,
        event_type=5,
        verdict=verdict,
        direction=1,
        trace_point=101,
        match_type=2,
    )


@dataclass
class FedObserver:
    node: NodeObserver
    feed: FeedSource

    @property
    def server(self) -> str:
        return f"127.0.0.1:{self.node.tcp_port}"

    def push(self, *events: bytes) -> None:
        """Feed events; wait (polling to a deadline) until the ring holds them."""
        want = self.node.ring.head + len(events)
        self.feed.push(b"".join(events))
        deadline = time.monotonic() + 10
        while self.node.ring.head < want:
            if time.monotonic() > deadline:
                raise AssertionError(f"ring holds {self.node.ring.head} events, want {want}")
            time.sleep(0.005)


@contextmanager
def fed_observer(*pods: EndpointInfo) -> Iterator[FedObserver]:
    metadata = StaticMetadata()
    for pod in pods:
        metadata.add_endpoint(pod)
    feed = FeedSource()
    listen = ListenConfig(tcp_address="127.0.0.1:0", plaintext_tcp=True)
    node = NodeObserver(ObserveConfig(node_name=NODE, listen=listen), feed, metadata)
    node.start()
    try:
        yield FedObserver(node, feed)
    finally:
        node.stop()
