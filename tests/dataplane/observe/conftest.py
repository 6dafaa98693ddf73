"""Fixtures for the flow-observability tests: records, pods, a running Observer."""

from __future__ import annotations

import os

# Before grpc is imported anywhere in this process: other tests (and the agent)
# fork pyroute2 helpers after gRPC threads exist; see septum.dataplane.observe.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import ipaddress  # noqa: E402
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from septum.dataplane.observe import record as r
from septum.dataplane.observe.api.observer import observer_pb2_grpc
from septum.dataplane.observe.decoder import DecoderConfig, FlowDecoder
from septum.dataplane.observe.metadata import EndpointInfo, PolicyInfo, StaticMetadata, Workload
from septum.dataplane.observe.node import NodeObserver, ObserveConfig
from septum.dataplane.observe.server import ListenConfig
from septum.dataplane.observe.sources import FeedSource

NODE = "sfl-node-1"
XWING = EndpointInfo(
    endpoint_id=11,
    identity=1001,
    namespace="default",
    pod_name="xwing",
    labels=("k8s:app=xwing", "k8s:org=alliance"),
    ips=("10.0.0.1", "fd00::1"),
)
DEATHSTAR = EndpointInfo(
    endpoint_id=12,
    identity=1002,
    namespace="empire",
    pod_name="deathstar-6fb5694d48-5hmds",
    labels=("k8s:app=deathstar", "k8s:org=empire"),
    workloads=(Workload(name="deathstar", kind="Deployment"),),
    ips=("10.0.0.2", "fd00::2"),
)
TIEFIGHTER = EndpointInfo(
    endpoint_id=13,
    identity=1003,
    namespace="empire",
    pod_name="tiefighter",
    labels=("k8s:app=tiefighter", "k8s:org=empire"),
    ips=("10.0.0.3", "fd00::3"),
)
PODS = (XWING, DEATHSTAR, TIEFIGHTER)
ALLOW_POLICY = PolicyInfo(name="rule1", namespace="empire", kind="CiliumNetworkPolicy", revision=3)
DENY_POLICY = PolicyInfo(name="deny-xwing", namespace="empire", kind="CiliumNetworkPolicy")


def addr(ip: str) -> bytes:
    return ipaddress.ip_address(ip).packed.ljust(16, b"\0")


def boot_ns() -> int:
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME)


# Ethernet addresses of the default event (as a host veth would see them).
SRC_MAC = bytes.fromhex("0a58c0a80a01")
DST_MAC = bytes.fromhex("ee7f3b9c00d2")


def event(
    src: EndpointInfo | str = XWING,
    dst: EndpointInfo | str = DEATHSTAR,
    *,
    v6: bool = False,
    **fields: Any,
) -> bytes:
    """One flow event as the datapath writes it (defaults: a TCP SYN xwing -> deathstar:80,
    allowed at the deathstar's ingress)."""

    def ip_of(side: EndpointInfo | str) -> str:
        return side if isinstance(side, str) else side.ips[1 if v6 else 0]

    def identity_of(side: EndpointInfo | str) -> int:
        return 2 if isinstance(side, str) else side.identity

    values: dict[str, Any] = {
        "time_ns": boot_ns(),
        "bytes": 74,
        "packets": 1,
        "src_addr": addr(ip_of(src)),
        "dst_addr": addr(ip_of(dst)),
        "src_identity": identity_of(src),
        "dst_identity": identity_of(dst),
        "endpoint_id": dst.endpoint_id if isinstance(dst, EndpointInfo) else 0,
        "src_port": 40000,
        "dst_port": 80,
        "protocol": 6,
        "tcp_flags": 0x02,
        "ip_version": 2 if v6 else 1,
        "event_type": 5,
        "verdict": 1,
        "direction": 1,
        "trace_point": 101,
        "match_type": 2,
        "src_mac": SRC_MAC,
        "dst_mac": DST_MAC,
    }
    values.update(fields)
    return r.pack(**values)


def reply_event(dst_port: int = 40000) -> bytes:
    """The deathstar's SYN-ACK back to xwing's port ``dst_port``, seen at the deathstar's egress."""
    return event(
        DEATHSTAR,
        XWING,
        src_port=80,
        dst_port=dst_port,
        tcp_flags=0x12,
        is_reply=1,
        event_type=4,
        direction=2,
        trace_point=5,
        endpoint_id=12,
    )


def metadata() -> StaticMetadata:
    md = StaticMetadata()
    for pod in PODS:
        md.add_endpoint(pod)
    md.add_policy(1, ALLOW_POLICY)
    md.add_policy(2, DENY_POLICY)
    return md


def decoder() -> FlowDecoder:
    return FlowDecoder(metadata(), DecoderConfig(node_name=NODE))


# Flows in one answer: far more than one DATA frame or one flow-control window holds.
BURST = 3000


def port_events(count: int) -> list[bytes]:
    """`count` flow events, told apart by their source ports (1000, 1001, ...)."""
    return [event(src_port=1000 + i) for i in range(count)]


def poll(what: str, check: Callable[[], object], timeout_s: float = 10.0) -> None:
    """Until `check()` returns True; on timeout, fail with the last value it returned."""
    deadline = time.monotonic() + timeout_s
    while True:
        last = check()
        if last is True:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: still {last!r} after {timeout_s} s")
        time.sleep(0.01)


@dataclass
class RunningObserver:
    node: NodeObserver
    feed: FeedSource
    socket: Path

    @property
    def target(self) -> str:
        return f"unix://{self.socket}"

    def push(self, *events: bytes) -> None:
        """Feed events and wait (polling to a deadline) until the ring holds them."""
        want = self.node.ring.head + len(events)
        self.feed.push(b"".join(events))
        deadline = time.monotonic() + 10
        while self.node.ring.head < want:
            if time.monotonic() > deadline:
                raise AssertionError(f"ring holds {self.node.ring.head} events, expected {want}")
            time.sleep(0.005)

    def stub(self) -> observer_pb2_grpc.ObserverStub:
        channel = grpc.insecure_channel(self.target)
        self._channels.append(channel)
        return observer_pb2_grpc.ObserverStub(channel)

    def __post_init__(self) -> None:
        self._channels: list[grpc.Channel] = []

    def close(self) -> None:
        for channel in self._channels:
            channel.close()


REPO = Path(__file__).resolve().parents[3]


@pytest.hookimpl(tryfirst=True)  # before pytest's own hook deselects by mark
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The `hubble` fixture may build the CLI from Go (minutes, network): a test asking for it
    # is a `lab` test, so `-m "not lab"` never starts a Go build, even if its mark is missing.
    for item in items:
        if "hubble" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.lab)


@pytest.fixture(scope="session")
def hubble() -> Path:
    """The real hubble CLI, built (or found cached) by lab/gobuild/build-hubble.sh."""
    out = subprocess.run(
        [str(REPO / "lab/gobuild/build-hubble.sh"), "--path"],
        check=True,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    path = Path(out.stdout.strip().splitlines()[-1])
    assert path.is_file(), out.stdout + out.stderr
    return path


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A short directory (unix socket paths are limited to 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="sfl-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def start_observer(
    socket_dir: Path, *, capacity: int = 4095, metrics: bool = False, **listen: Any
) -> RunningObserver:
    feed = FeedSource()
    socket = socket_dir / "observer.sock"
    config = ObserveConfig(
        node_name=NODE,
        listen=ListenConfig(unix_socket=socket, **listen),
        buffer_capacity=capacity,
        metrics_address=("127.0.0.1", 0) if metrics else None,
    )
    node = NodeObserver(config, feed, metadata())
    node.start()
    return RunningObserver(node, feed, socket)


@pytest.fixture
def observer(short_tmp: Path) -> Iterator[RunningObserver]:
    running = start_observer(short_tmp)
    try:
        yield running
    finally:
        running.close()
        running.node.stop()


# The columns of `observe -o table`, in hubble's order and spelling.
TABLE_HEADER = ["TIMESTAMP", "SOURCE", "DESTINATION", "TYPE", "VERDICT", "SUMMARY"]

# A table row starts with its timestamp: Go's time.StampMilli in hubble ("Dec  5 18:55:16.931",
# the day padded with a space), "%b %d" in Septum ("Dec 05 ...").
_TABLE_TIMESTAMP = re.compile(r"[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d\.\d{3}")


def table_cells(line: str) -> list[str]:
    """The cells of one line of `observe -o table` output.

    Columns are padded with 2+ spaces, but on days 1-9 hubble's timestamp holds two spaces
    itself: it is matched first and the rest of the line split.
    """
    stamp = _TABLE_TIMESTAMP.match(line)
    if stamp is None:  # the header
        return re.split(r"\s{2,}", line.strip())
    return [stamp.group(), *re.split(r"\s{2,}", line[stamp.end() :].strip())]


def hubble_observe(hubble: Path, observer: RunningObserver, *args: str) -> str:
    """`hubble observe ARGS` against the running Observer; its standard output."""
    env = {**os.environ, "HOME": str(observer.socket.parent)}
    done = subprocess.run(
        [str(hubble), "observe", *args, "--server", observer.target],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def hubble_json(hubble: Path, observer: RunningObserver, *args: str) -> list[dict[str, Any]]:
    """The flows `hubble observe -o json ARGS` prints."""
    out = hubble_observe(hubble, observer, "-o", "json", *args)
    return [json.loads(line)["flow"] for line in out.splitlines() if line.strip()]


# Test modules import these helpers as `observe_helpers`: with pytest's
# importlib import mode sibling modules are not on sys.path, and this conftest
# is always imported before the tests of this directory.
sys.modules.setdefault("observe_helpers", sys.modules[__name__])
