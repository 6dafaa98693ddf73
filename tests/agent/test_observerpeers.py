"""peer.Peer/Notify over mutual TLS lists every node, kept from Node events.

The Observer is the agent's (ObserverOptions → ListenConfig, ObserverPeers over a
PeerDirectory) on a real TCP listener with a throwaway CA; the client is a real grpc
channel that verifies the agent under its advertised server name and presents a client
certificate, as the relay does.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from septum.agent.observerconfig import ObserverOptions
from septum.agent.observerpeers import ObserverPeers, node_address
from septum.dataplane.observe.api.observer import observer_pb2, observer_pb2_grpc
from septum.dataplane.observe.api.peer import peer_pb2, peer_pb2_grpc
from septum.dataplane.observe.node import NodeObserver, ObserveConfig
from septum.dataplane.observe.peers import PeerDirectory
from septum.dataplane.observe.sources import FeedSource

from .pki import ObserverPki, make_pki

CLUSTER = "c1"


def _node(name: str, *addresses: tuple[str, str]) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "status": {"addresses": [{"type": kind, "address": ip} for kind, ip in addresses]},
    }


def test_a_node_is_reached_at_its_internal_ip_first() -> None:
    assert node_address(_node("n", ("Hostname", "n"), ("InternalIP", "10.0.0.1"))) == "10.0.0.1"
    both = _node("n", ("InternalIP", "fd00::1"), ("InternalIP", "10.0.0.1"))
    assert node_address(both) == "10.0.0.1"
    assert node_address(_node("n", ("ExternalIP", "192.0.2.1"))) == "192.0.2.1"
    assert node_address(_node("n", ("Hostname", "n"))) is None


@dataclass
class AgentObserver:
    observer: NodeObserver
    peers: ObserverPeers
    pki: ObserverPki

    def channel(self) -> grpc.Channel:
        pki = self.pki
        credentials = grpc.ssl_channel_credentials(
            root_certificates=pki.ca.read_bytes(),
            private_key=pki.client_key.read_bytes(),
            certificate_chain=pki.client_cert.read_bytes(),
        )
        name = self.observer.service.node.tls_server_name
        return grpc.secure_channel(
            f"127.0.0.1:{self.observer.tcp_port}",
            credentials,
            options=[("grpc.ssl_target_name_override", name)],
        )


@pytest.fixture
def agent_observer(tmp_path: Path) -> Iterator[AgentObserver]:
    """As Agent._start_observer assembles it: TCP on every address, mutual TLS."""
    pki = make_pki(tmp_path, CLUSTER)
    options = ObserverOptions(
        address="0.0.0.0:0",
        tls_cert_file=pki.agent_cert,
        tls_key_file=pki.agent_key,
        tls_client_ca_file=pki.ca,
    )
    options.check()
    directory = PeerDirectory()
    config = ObserveConfig(
        node_name="node-a",
        listen=options.listen(),
        tls_server_name=options.server_name("node-a", CLUSTER),
    )
    observer = NodeObserver(config, FeedSource(), peers=directory)
    observer.start()
    try:
        assert observer.tcp_port

        def advertise(address: str) -> None:
            observer.service.node.address = address

        peers = ObserverPeers(
            directory,
            options,
            "node-a",
            CLUSTER,
            observer.tcp_port,
            observer.service.node.address,
            advertise,
        )
        yield AgentObserver(observer, peers, pki)
    finally:
        observer.stop()


def _follow(channel: grpc.Channel, notes: queue.Queue[object]) -> threading.Thread:
    def read() -> None:
        try:
            stream = peer_pb2_grpc.PeerStub(channel).Notify(peer_pb2.NotifyRequest(), timeout=30)
            for note in stream:
                notes.put((note.type, note.name, note.address, note.tls.server_name))
        except grpc.RpcError as err:
            notes.put(err.code())
        notes.put("end")

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread


def test_notify_lists_every_node_and_follows_them(agent_observer: AgentObserver) -> None:
    port = agent_observer.observer.tcp_port
    peers = agent_observer.peers
    # before its Node is known the node is announced where it listens (every address)
    assert agent_observer.observer.service.node.address == f"0.0.0.0:{port}"
    peers.apply("upsert", _node("node-a", ("InternalIP", "127.0.0.1")))
    peers.apply("upsert", _node("node-b", ("InternalIP", "10.0.0.2")))
    name_b = "node-b.c1.hubble-grpc.septum.io"
    notes: queue.Queue[object] = queue.Queue()
    with agent_observer.channel() as channel:
        reader = _follow(channel, notes)
        first = {notes.get(timeout=10), notes.get(timeout=10)}
        assert first == {
            (peer_pb2.PEER_ADDED, "node-a", f"127.0.0.1:{port}", "node-a.c1.hubble-grpc.septum.io"),
            (peer_pb2.PEER_ADDED, "node-b", f"10.0.0.2:{port}", name_b),
        }
        peers.apply("upsert", _node("node-c", ("InternalIP", "10.0.0.3")))
        assert notes.get(timeout=10)[:3] == (peer_pb2.PEER_ADDED, "node-c", f"10.0.0.3:{port}")
        peers.apply("upsert", _node("node-b", ("InternalIP", "10.0.0.22")))
        assert notes.get(timeout=10) == (
            peer_pb2.PEER_UPDATED,
            "node-b",
            f"10.0.0.22:{port}",
            name_b,
        )
        peers.apply("upsert", _node("node-b", ("InternalIP", "10.0.0.22")))  # no change
        peers.apply("delete", _node("node-b", ("InternalIP", "10.0.0.22")))
        assert notes.get(timeout=10)[:2] == (peer_pb2.PEER_DELETED, "node-b")
        # GetNodes says where this node is announced, and under which server name
        stub = observer_pb2_grpc.ObserverStub(channel)
        (node,) = stub.GetNodes(observer_pb2.GetNodesRequest(), timeout=10).nodes
        assert node.address == f"127.0.0.1:{port}"
        assert node.tls.enabled and node.tls.server_name == "node-a.c1.hubble-grpc.septum.io"
        agent_observer.observer.stop()
        assert notes.get(timeout=10) == "end"
        reader.join(5)


def test_an_advertise_address_overrides_the_internal_ip(tmp_path: Path) -> None:
    directory = PeerDirectory()
    options = ObserverOptions(address=":4244", insecure=True, advertise_address="192.0.2.9:14244")
    seen: list[str] = []
    peers = ObserverPeers(directory, options, "node-a", CLUSTER, 4244, ":4244", seen.append)
    peers.apply("upsert", _node("node-a", ("InternalIP", "10.0.0.1")))
    peers.apply("upsert", _node("node-b", ("InternalIP", "10.0.0.2")))
    assert [(p.name, p.address, p.tls_server_name) for p in directory.peers()] == [
        ("node-a", "192.0.2.9:14244", ""),
        ("node-b", "10.0.0.2:4244", ""),
    ]
    assert seen == [":4244", "192.0.2.9:14244"]
