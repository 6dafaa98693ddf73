"""Fixtures for the relay tests: agents' Observers on localhost ports, a relay, certificates."""

from __future__ import annotations

import os

# Before grpc is imported in this process (see tests/dataplane/observe/conftest.py).
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import datetime  # noqa: E402
import importlib.util
import ipaddress
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from septum.dataplane.observe import record as r
from septum.dataplane.observe.api.observer import observer_pb2, observer_pb2_grpc
from septum.dataplane.observe.history import HistoryConfig
from septum.dataplane.observe.metadata import EndpointInfo, StaticMetadata
from septum.dataplane.observe.node import NodeObserver, ObserveConfig
from septum.dataplane.observe.server import ListenConfig, TLSFiles
from septum.dataplane.observe.sources import FeedSource
from septum.relay.peers import Backoff
from septum.relay.server import RelayConfig, RelayThread
from septum.relay.service import MergeSettings

REPO = Path(__file__).resolve().parents[2]
FRONTEND = EndpointInfo(21, 2001, "shop", "frontend", ("k8s:app=frontend",), ips=("10.1.0.1",))
BACKEND = EndpointInfo(22, 2002, "shop", "backend", ("k8s:app=backend",), ips=("10.1.0.2",))
VERDICT_FORWARDED, VERDICT_DROPPED = 1, 2


def metadata() -> StaticMetadata:
    md = StaticMetadata()
    md.add_endpoint(FRONTEND)
    md.add_endpoint(BACKEND)
    return md


def boot_ns() -> int:
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME)


def flow_event(at_boot_ns: int, src_port: int, verdict: int = VERDICT_FORWARDED) -> bytes:
    """A TCP SYN frontend -> backend:8080 at a chosen (boot-clock) time, told apart by its
    source port."""
    return r.pack(
        time_ns=at_boot_ns,
        bytes=74,
        packets=1,
        src_addr=ipaddress.ip_address(FRONTEND.ips[0]).packed.ljust(16, b"\0"),
        dst_addr=ipaddress.ip_address(BACKEND.ips[0]).packed.ljust(16, b"\0"),
        src_identity=FRONTEND.identity,
        dst_identity=BACKEND.identity,
        endpoint_id=BACKEND.endpoint_id,
        src_port=src_port,
        dst_port=8080,
        protocol=6,
        tcp_flags=0x02,
        ip_version=1,
        event_type=5,
        verdict=verdict,
        direction=1,
        trace_point=101,
        match_type=2,
    )


@dataclass
class Agent:
    name: str
    node: NodeObserver
    feed: FeedSource

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.node.tcp_port}"

    def push(self, *events: bytes) -> None:
        """Feed events and wait until the ring holds them."""
        want = self.node.ring.head + len(events)
        self.feed.push(b"".join(events))
        poll(f"{self.name} ring head", lambda: self.node.ring.head >= want or self.node.ring.head)

    def stop(self) -> None:
        self.node.stop()


def start_agent(
    name: str,
    port: int = 0,
    tls: TLSFiles | None = None,
    capacity: int = 4095,
    history: HistoryConfig | None = None,
) -> Agent:
    feed = FeedSource()
    config = ObserveConfig(
        node_name=name,
        listen=ListenConfig(tcp_address=f"127.0.0.1:{port}", tls=tls, plaintext_tcp=tls is None),
        buffer_capacity=capacity,
        tls_server_name="localhost" if tls is not None else "",
        history=history,
    )
    node = NodeObserver(config, feed, metadata())
    node.start()
    return Agent(name, node, feed)


@dataclass
class Agents:
    started: list[Agent] = field(default_factory=list)

    def start(self, name: str, **kwargs: object) -> Agent:
        agent = start_agent(name, **kwargs)  # type: ignore[arg-type]
        self.started.append(agent)
        return agent


@pytest.fixture
def agents() -> Iterator[Agents]:
    running = Agents()
    try:
        yield running
    finally:
        for agent in running.started:
            try:
                agent.stop()
            except RuntimeError:
                pass  # already stopped by the test


def run_hubble(hubble: Path, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The real hubble CLI with its own HOME (no user config), as a user would run it."""
    return subprocess.run(
        [str(hubble), *args],
        capture_output=True,
        text=True,
        timeout=20,
        env={"HOME": str(home), "PATH": "/usr/bin:/bin"},
        check=False,
    )


def relay_config(agent_addresses: list[str], **overrides: object) -> RelayConfig:
    """A relay on a free localhost port, quick to notice agents leave and come back."""
    settings: dict[str, object] = {
        "listen_address": "127.0.0.1:0",
        "agents": tuple(agent_addresses),
        "insecure_agents": True,
        "insecure": True,
        "check_interval_s": 0.2,
        "call_timeout_s": 1.0,
        "backoff": Backoff(first_s=0.05, max_s=0.3),
        "merge": MergeSettings(lag_s=0.1, max_len=512),
    }
    settings.update(overrides)
    return RelayConfig(**settings)  # type: ignore[arg-type]


@dataclass
class RunningRelay:
    thread: RelayThread
    channels: list[grpc.Channel] = field(default_factory=list)

    @property
    def target(self) -> str:
        assert self.thread.relay is not None
        return f"127.0.0.1:{self.thread.relay.port}"

    def stub(
        self, credentials: grpc.ChannelCredentials | None = None
    ) -> observer_pb2_grpc.ObserverStub:
        if credentials is None:
            channel = grpc.insecure_channel(self.target)
        else:
            channel = grpc.secure_channel(
                self.target, credentials, options=[("grpc.ssl_target_name_override", "localhost")]
            )
        self.channels.append(channel)
        return observer_pb2_grpc.ObserverStub(channel)

    def nodes(self) -> dict[str, observer_pb2.Node]:
        reply = self.stub().GetNodes(observer_pb2.GetNodesRequest(), timeout=10)
        return {node.name: node for node in reply.nodes}


@pytest.fixture
def start_relay() -> Iterator[Callable[[RelayConfig], RunningRelay]]:
    started: list[RunningRelay] = []

    def start(config: RelayConfig) -> RunningRelay:
        thread = RelayThread(config)
        running = RunningRelay(thread)
        started.append(running)
        thread.start()
        return running

    try:
        yield start
    finally:
        for running in started:
            for channel in running.channels:
                channel.close()
            running.thread.stop()


# ---- certificates ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Certificates:
    ca: Path
    agent_cert: Path
    agent_key: Path
    relay_cert: Path  # the relay's client certificate towards the agents
    relay_key: Path
    other_ca: Path  # a CA nobody's certificate chains to


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _ca(name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _leaf(
    ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, name: str
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


@pytest.fixture(scope="session")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """A throwaway CA, an agent server certificate, the relay's client certificate."""
    folder = tmp_path_factory.mktemp("relay-pki")
    ca_key, ca_cert = _ca("septum-test-ca")
    _, other_cert = _ca("someone-else")
    files: dict[str, bytes] = {
        "ca.pem": ca_cert.public_bytes(serialization.Encoding.PEM),
        "other-ca.pem": other_cert.public_bytes(serialization.Encoding.PEM),
    }
    for name in ("agent", "relay"):
        key, cert = _leaf(ca_key, ca_cert, f"{name}.septum.test")
        files[f"{name}.pem"] = cert.public_bytes(serialization.Encoding.PEM)
        files[f"{name}-key.pem"] = _key_pem(key)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return Certificates(
        ca=folder / "ca.pem",
        agent_cert=folder / "agent.pem",
        agent_key=folder / "agent-key.pem",
        relay_cert=folder / "relay.pem",
        relay_key=folder / "relay-key.pem",
        other_ca=folder / "other-ca.pem",
    )


# ---- shared with the Observer's tests: poll, and the real hubble CLI (a `lab` fixture) --------
def _observe_helpers() -> ModuleType:
    """tests/dataplane/observe/conftest.py as a module (loaded once, under the name its own
    tests import it by)."""
    loaded = sys.modules.get("observe_helpers")
    if loaded is None:
        path = REPO / "tests/dataplane/observe/conftest.py"
        spec = importlib.util.spec_from_file_location("observe_helpers", path)
        assert spec is not None and spec.loader is not None
        loaded = importlib.util.module_from_spec(spec)
        sys.modules["observe_helpers"] = loaded
        spec.loader.exec_module(loaded)
    return loaded


_observe = _observe_helpers()
poll = _observe.poll
hubble = _observe.hubble  # the fixture; tests asking for it are marked lab by the hook below
pytest_collection_modifyitems = _observe.pytest_collection_modifyitems

sys.modules.setdefault("relay_helpers", sys.modules[__name__])
