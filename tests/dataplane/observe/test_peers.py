"""The peer directory behind peer.Peer/Notify: merge rules, and a real grpc follower."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import observe_helpers as h
import pytest

from septum.dataplane.observe.api.peer import peer_pb2, peer_pb2_grpc
from septum.dataplane.observe.node import NodeObserver, ObserveConfig
from septum.dataplane.observe.peers import Peer, PeerDirectory, tls_server_name
from septum.dataplane.observe.server import ListenConfig
from septum.dataplane.observe.sources import FeedSource

A = Peer("node-a", "10.0.0.1:4244", "node-a.c1.hubble-grpc.septum.io")
B = Peer("node-b", "10.0.0.2:4244", "node-b.c1.hubble-grpc.septum.io")


def test_the_server_name_follows_cilium_with_dots_made_hyphens() -> None:
    assert tls_server_name("node-a", "c1") == "node-a.c1.hubble-grpc.septum.io"
    assert tls_server_name("ip-10-0-0-1.ec2.internal", "prod.eu") == (
        "ip-10-0-0-1-ec2-internal.prod-eu.hubble-grpc.septum.io"
    )


def test_a_subscription_starts_with_every_peer_then_gets_changes() -> None:
    directory = PeerDirectory()
    assert directory.upsert(A) == "added"
    assert directory.upsert(A) is None  # nothing changed
    subscription = directory.subscribe()
    assert [(c.type, c.peer) for c in subscription.take(0)] == [("added", A)]
    moved = Peer("node-a", "10.0.0.9:4244", A.tls_server_name)
    assert directory.upsert(moved) == "updated"
    assert directory.upsert(B) == "added"
    assert directory.remove("node-b")
    assert not directory.remove("node-b")
    # node-b came and went unread: the follower hears nothing of it
    assert [(c.type, c.peer) for c in subscription.take(0)] == [("updated", moved)]
    subscription.close()
    directory.upsert(B)
    assert subscription.take(0) == []


def test_unread_changes_merge_per_node() -> None:
    directory = PeerDirectory()
    directory.upsert(A)
    subscription = directory.subscribe()
    subscription.take(0)
    directory.remove("node-a")
    directory.upsert(A)  # deleted then back: the follower knew it, so it is an update
    directory.upsert(B)
    directory.upsert(Peer("node-b", "10.0.0.3:4244"))  # added then updated: still added
    changes = [(c.type, c.peer.name, c.peer.address) for c in subscription.take(0)]
    assert changes == [("updated", "node-a", A.address), ("added", "node-b", "10.0.0.3:4244")]


def test_take_waits_for_a_change_from_another_thread() -> None:
    directory = PeerDirectory()
    subscription = directory.subscribe()
    timer = threading.Timer(0.05, directory.upsert, args=(A,))
    timer.start()
    try:
        assert [c.peer for c in subscription.take(10)] == [A]
    finally:
        timer.join()


# ---- over gRPC -----------------------------------------------------------------------


@pytest.fixture
def directory_observer(short_tmp: Path) -> Iterator[tuple[NodeObserver, PeerDirectory]]:
    directory = PeerDirectory()
    directory.upsert(A)
    config = ObserveConfig(
        node_name="node-a", listen=ListenConfig(unix_socket=short_tmp / "observer.sock")
    )
    node = NodeObserver(config, FeedSource(), h.metadata(), peers=directory)
    node.start()
    try:
        yield node, directory
    finally:
        node.stop()


def _follow(target: str, notes: queue.Queue[object]) -> threading.Thread:
    def read() -> None:
        with grpc.insecure_channel(target) as channel:
            try:
                for note in peer_pb2_grpc.PeerStub(channel).Notify(
                    peer_pb2.NotifyRequest(), timeout=30
                ):
                    notes.put(note)
            except grpc.RpcError as err:
                notes.put(err)
        notes.put("end")

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread


def _next(notes: queue.Queue[object]) -> tuple[int, str, str, str]:
    note = notes.get(timeout=10)
    assert isinstance(note, peer_pb2.ChangeNotification), note
    return note.type, note.name, note.address, note.tls.server_name


def test_notify_follows_the_directory_and_ends_when_the_server_stops(
    directory_observer: tuple[NodeObserver, PeerDirectory], short_tmp: Path
) -> None:
    node, directory = directory_observer
    notes: queue.Queue[object] = queue.Queue()
    reader = _follow(f"unix://{short_tmp / 'observer.sock'}", notes)
    assert _next(notes) == (peer_pb2.PEER_ADDED, *vars(A).values())
    directory.upsert(B)
    assert _next(notes) == (peer_pb2.PEER_ADDED, *vars(B).values())
    directory.upsert(Peer("node-b", "10.0.0.7:4244", B.tls_server_name))
    assert _next(notes) == (peer_pb2.PEER_UPDATED, "node-b", "10.0.0.7:4244", B.tls_server_name)
    directory.remove("node-b")
    assert _next(notes)[:2] == (peer_pb2.PEER_DELETED, "node-b")
    node.stop()
    assert notes.get(timeout=10) == "end"  # status OK, well within the stop's grace
    reader.join(5)
    assert not reader.is_alive()
