"""The peer directory: every node's Observer, as peer.Peer/Notify announces them.

Hubble's peer service lists every node of the cluster, not only its own, so that a relay
seeded with one agent (or a Service in front of the agents) learns them all. The agent
writes this directory from its Node watch; each Notify follower (a grpcio worker thread)
holds a subscription: first every known peer as PEER_ADDED, then each change.

A follower that reads slowly never makes the directory grow: its pending changes are kept
one per node, merged (added then updated is still added, added then deleted is nothing),
so what waits is bounded by the number of nodes, not by how often they changed.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Final, Literal

ChangeType = Literal["added", "updated", "deleted"]

# Cilium's pattern (pkg/hubble/peer TLSServerName) with Septum's domain: one wildcard
# certificate, SAN *.<cluster>.hubble-grpc.septum.io, serves every node of a cluster.
TLS_SERVER_NAME_DOMAIN: Final = "hubble-grpc.septum.io"


def tls_server_name(node: str, cluster: str) -> str:
    """`<node>.<cluster>.hubble-grpc.septum.io`; dots in either name become hyphens, so that
    every node's name sits at the same DNS level and one wildcard SAN matches them all."""
    return ".".join(
        (node.replace(".", "-"), cluster.replace(".", "-") or "default", TLS_SERVER_NAME_DOMAIN)
    )


@dataclass(frozen=True)
class Peer:
    name: str
    address: str  # host:port where the node's Observer is reached
    tls_server_name: str = ""  # "" when the Observers listen in plaintext


@dataclass(frozen=True)
class PeerChange:
    type: ChangeType
    peer: Peer


def _merged(pending: PeerChange | None, change: PeerChange) -> PeerChange | None:
    """What a follower should still be told when `change` follows `pending` unread."""
    if pending is None:
        return change
    if pending.type == "added":
        # the follower never heard of the peer: only its newest state, or nothing at all
        return None if change.type == "deleted" else PeerChange("added", change.peer)
    if change.type == "added":  # deleted, then back before the follower read it
        return PeerChange("updated", change.peer)
    return change


class PeerSubscription:
    """One follower's view: every peer as added, then the changes since, merged per node."""

    def __init__(self, directory: PeerDirectory, known: list[Peer]) -> None:
        self._directory = directory
        self._wakeup = threading.Condition(threading.Lock())
        self._pending: dict[str, PeerChange] = {p.name: PeerChange("added", p) for p in known}

    def offer(self, change: PeerChange) -> None:
        with self._wakeup:
            merged = _merged(self._pending.pop(change.peer.name, None), change)
            if merged is not None:
                self._pending[change.peer.name] = merged
            self._wakeup.notify_all()

    def take(self, timeout_s: float) -> list[PeerChange]:
        """The pending changes, waiting up to `timeout_s` (or a wake()) when there are none."""
        with self._wakeup:
            if not self._pending:
                self._wakeup.wait(timeout_s)
            changes = list(self._pending.values())
            self._pending.clear()
        return changes

    def close(self) -> None:
        self._directory.unsubscribe(self)


class PeerDirectory:
    """The cluster's Observers by node name; one writer (the agent), many followers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._peers: dict[str, Peer] = {}
        self._subscriptions: set[PeerSubscription] = set()

    def peers(self) -> list[Peer]:
        with self._lock:
            return sorted(self._peers.values(), key=lambda p: p.name)

    def upsert(self, peer: Peer) -> ChangeType | None:
        """Add the peer or update its address and server name; None when nothing changed."""
        with self._lock:
            old = self._peers.get(peer.name)
            if old == peer:
                return None
            self._peers[peer.name] = peer
            change = PeerChange("added" if old is None else "updated", peer)
            self._tell(change)
        return change.type

    def remove(self, name: str) -> bool:
        """Forget a node; False when it was not known."""
        with self._lock:
            old = self._peers.pop(name, None)
            if old is None:
                return False
            self._tell(PeerChange("deleted", old))
        return True

    def subscribe(self) -> PeerSubscription:
        with self._lock:
            subscription = PeerSubscription(
                self, sorted(self._peers.values(), key=lambda p: p.name)
            )
            self._subscriptions.add(subscription)
        return subscription

    def unsubscribe(self, subscription: PeerSubscription) -> None:
        with self._lock:
            self._subscriptions.discard(subscription)

    def _tell(self, change: PeerChange) -> None:
        # under self._lock: a follower subscribing now gets either the peer or this change
        for subscription in self._subscriptions:
            subscription.offer(change)
