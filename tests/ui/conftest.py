"""Fixtures for the UI tests: a real Observer and relay fed Star Wars flows, `septum ui` as a
process, and Debian's chromium driven by Playwright (no browser of Playwright's own)."""

from __future__ import annotations

import os

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import ipaddress  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from septum.bench.ui import CHROMIUM, chromium  # noqa: E402
from septum.dataplane.observe import record as r  # noqa: E402
from septum.dataplane.observe.metadata import (  # noqa: E402
    EndpointInfo,
    PolicyInfo,
    StaticMetadata,
    Workload,
)
from septum.dataplane.observe.node import NodeObserver, ObserveConfig  # noqa: E402
from septum.dataplane.observe.server import ListenConfig  # noqa: E402
from septum.dataplane.observe.sources import FeedSource  # noqa: E402
from septum.relay.server import RelayConfig, RelayThread  # noqa: E402
from septum.relay.service import MergeSettings  # noqa: E402
from tests.cli.observer_feed import FedObserver  # noqa: E402

# The relay tests' agents and throwaway PKI, for the bridge's TLS test.
from tests.relay.conftest import agents, certificates  # noqa: E402, F401

REPO = Path(__file__).resolve().parents[2]
ASSETS = REPO / "build" / "ui"
SCREENSHOTS = REPO / "build" / "ui-screenshots"


def _ep(
    eid: int, ident: int, ns: str, pod: str, labels: tuple[str, ...], ip: str, wl: str
) -> EndpointInfo:
    return EndpointInfo(
        eid, ident, ns, pod, labels, workloads=(Workload(wl, "Deployment"),), ips=(ip,)
    )


# The Star Wars demo's shape: the empire's tiefighter may land on the deathstar, the
# alliance's xwing is dropped by the default deny the deathstar's policy sets up.
DEATHSTAR = _ep(
    31,
    3001,
    "default",
    "deathstar-6f87f7b5d4-x2k9p",
    ("k8s:class=deathstar", "k8s:org=empire"),
    "10.2.0.10",
    "deathstar",
)
TIEFIGHTER = _ep(
    32,
    3002,
    "default",
    "tiefighter",
    ("k8s:class=tiefighter", "k8s:org=empire"),
    "10.2.0.11",
    "tiefighter",
)
XWING = _ep(
    33, 3003, "default", "xwing", ("k8s:class=xwing", "k8s:org=alliance"), "10.2.0.12", "xwing"
)
RULE_ALLOW, RULE_DEFAULT_DENY = 7, 8
POLICY = dict(name="rule1", namespace="default", kind="CiliumNetworkPolicy")


def starwars_metadata() -> StaticMetadata:
    md = StaticMetadata()
    for ep in (DEATHSTAR, TIEFIGHTER, XWING):
        md.add_endpoint(ep)
    md.add_identity(2, ("reserved:world",))
    md.add_policy(RULE_ALLOW, PolicyInfo(**POLICY, revision=3))  # type: ignore[arg-type]
    md.add_policy(
        RULE_DEFAULT_DENY,
        PolicyInfo(**POLICY, revision=3, default_deny=True),  # type: ignore[arg-type]
    )
    return md


def _addr(ip: str) -> bytes:
    return ipaddress.ip_address(ip).packed.ljust(16, b"\0")


def landing(src: EndpointInfo, src_port: int, *, allowed: bool, at_ns: int | None = None) -> bytes:
    """A SYN from `src` to the deathstar's port 80, as the deathstar's ingress policy judged it."""
    return r.pack(
        time_ns=at_ns if at_ns is not None else time.clock_gettime_ns(time.CLOCK_BOOTTIME),
        bytes=74,
        packets=1,
        src_addr=_addr(src.ips[0]),
        dst_addr=_addr(DEATHSTAR.ips[0]),
        src_identity=src.identity,
        dst_identity=DEATHSTAR.identity,
        endpoint_id=DEATHSTAR.endpoint_id,
        rule_id=RULE_ALLOW if allowed else RULE_DEFAULT_DENY,
        src_port=src_port,
        dst_port=80,
        protocol=r.IPPROTO_TCP,
        tcp_flags=0x02,
        ip_version=r.IP_V4,
        event_type=r.EVENT_POLICY_VERDICT,
        verdict=r.VERDICT_FORWARDED if allowed else r.VERDICT_DROPPED,
        drop_reason=0 if allowed else 181,  # POLICY_DENY; the decoder makes it POLICY_DENIED
        direction=r.DIR_INGRESS,
        trace_point=101,
        match_type=2,
    )


def to_world(src: EndpointInfo, src_port: int) -> bytes:
    return r.pack(
        time_ns=time.clock_gettime_ns(time.CLOCK_BOOTTIME),
        bytes=60,
        packets=1,
        src_addr=_addr(src.ips[0]),
        dst_addr=_addr("192.0.2.7"),
        src_identity=src.identity,
        dst_identity=2,
        endpoint_id=src.endpoint_id,
        src_port=src_port,
        dst_port=53,
        protocol=r.IPPROTO_UDP,
        ip_version=r.IP_V4,
        event_type=r.EVENT_TRACE,
        verdict=r.VERDICT_FORWARDED,
        direction=r.DIR_EGRESS,
        trace_point=100,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer within {timeout}s")
        time.sleep(0.1)


@dataclass
class Backend:
    observer: FedObserver
    relay: RelayThread

    @property
    def node(self) -> NodeObserver:
        return self.observer.node

    @property
    def agent_address(self) -> str:
        return self.observer.server

    @property
    def relay_address(self) -> str:
        assert self.relay.relay is not None
        return f"127.0.0.1:{self.relay.relay.port}"

    def push(self, *events: bytes) -> None:
        self.observer.push(*events)


@pytest.fixture
def backend() -> Iterator[Backend]:
    """One agent's Observer (a real gRPC server fed Star Wars events) and a relay over it."""
    feed = FeedSource()
    node = NodeObserver(
        ObserveConfig(
            node_name="ui-node-1",
            listen=ListenConfig(tcp_address="127.0.0.1:0", plaintext_tcp=True),
            buffer_capacity=8191,
        ),
        feed,
        starwars_metadata(),
    )
    node.start()
    relay = RelayThread(
        RelayConfig(
            listen_address="127.0.0.1:0",
            agents=(f"127.0.0.1:{node.tcp_port}",),
            insecure_agents=True,
            insecure=True,
            check_interval_s=0.2,
            call_timeout_s=1.0,
            merge=MergeSettings(lag_s=0.1, max_len=512),
        )
    )
    try:
        relay.start()
        yield Backend(FedObserver(node, feed), relay)
    finally:
        relay.stop()
        node.stop()


@dataclass
class UIServer:
    url: str
    process: subprocess.Popen[bytes]


@pytest.fixture
def start_ui() -> Iterator[Callable[[str], UIServer]]:
    """`septum ui --server ADDRESS` as a user runs it, on a free port."""
    if not (ASSETS / "index.html").is_file():
        pytest.fail(f"no built UI in {ASSETS}: run `make ui`")
    started: list[UIServer] = []

    def start(server: str, *extra: str) -> UIServer:
        port = free_port()
        proc = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "septum"),
                "ui",
                "--server",
                server,
                "--address",
                "127.0.0.1",
                "--port",
                str(port),
                *extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        ui = UIServer(f"http://127.0.0.1:{port}", proc)
        started.append(ui)
        try:
            wait_http(ui.url + "/")
        except TimeoutError:
            proc.kill()
            _, err = proc.communicate(timeout=5)
            raise AssertionError(f"septum ui did not start: {err.decode()}") from None
        return ui

    try:
        yield start
    finally:
        for ui in started:
            ui.process.terminate()
            try:
                ui.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                ui.process.kill()
                ui.process.wait()
            if ui.process.stderr is not None:
                ui.process.stderr.close()


@pytest.fixture
def browser() -> Iterator[object]:
    """Debian's chromium, headless, with a fresh profile removed afterwards."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} missing: `make deps` installs Debian's chromium")
    with chromium() as context:
        yield context


def screenshot(page: object, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))  # type: ignore[attr-defined]


def rule_now_text(page: object) -> str:
    """The flow detail's deciding rule (Explain, the flow's direction), once it is shown."""
    rule = page.get_by_test_id("flow-rule-now")  # type: ignore[attr-defined]
    rule.wait_for(timeout=30000)
    assert rule.count() == 1
    return str(rule.inner_text())
