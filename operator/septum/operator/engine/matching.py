"""Does a rule's peer side match an identity? Decided from the identity's labels alone.

The compiler caches these answers per identity number; `explain` calls the same
predicates on label sets directly, so hypothetical endpoints need no number.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from functools import lru_cache
from typing import Protocol

from septum.operator.engine.cidrs import contains
from septum.operator.engine.cluster import IPAddress
from septum.operator.engine.fqdn import selectors_match
from septum.operator.engine.labels import SOURCE_CIDR, SOURCE_K8S, SOURCE_RESERVED, LabelSet
from septum.operator.engine.podclass import pod_cidr_matches
from septum.operator.engine.rules import CidrPeer, IPNetwork, Peers
from septum.operator.engine.selectors import Selector

# Which reserved identities each entity stands for; `world*` also covers every
# CIDR identity of the family, `cluster` every pod identity.
ENTITY_RESERVED: dict[str, frozenset[str]] = {
    "world": frozenset({"world", "world-ipv4", "world-ipv6"}),
    "world-ipv4": frozenset({"world-ipv4", "world"}),
    "world-ipv6": frozenset({"world-ipv6", "world"}),
    "cluster": frozenset({"host", "remote-node", "init", "health", "unmanaged", "ingress"}),
    "host": frozenset({"host"}),
    "remote-node": frozenset({"remote-node"}),
    "kube-apiserver": frozenset({"kube-apiserver"}),
    "health": frozenset({"health"}),
    "init": frozenset({"init"}),
    "ingress": frozenset({"ingress"}),
    "unmanaged": frozenset({"unmanaged"}),
    "none": frozenset(),
}
_WORLD_FAMILY = {"world": (4, 6), "world-ipv4": (4,), "world-ipv6": (6,)}
_WORLD_OF_FAMILY = {"world-ipv4": 4, "world-ipv6": 6}


class NodeView(Protocol):
    """What node peers need of the cluster: which nodes a selector selects, and the
    addresses a node identity (`host`, `remote-node`) stands for on this engine."""

    def node_matches(self, selector: Selector) -> bool: ...

    def node_addresses(self, name: str) -> Sequence[IPAddress]: ...

    def fqdn_names(self, network: IPNetwork) -> frozenset[str]: ...


NODE_IDENTITIES = ("host", "remote-node")


@lru_cache(maxsize=65536)
def cidr_network(labels: LabelSet) -> IPNetwork:
    return ipaddress.ip_network(labels.items[0][0])


def reserved_name(labels: LabelSet) -> str:
    return labels.items[0][0]


def cidr_matches(peer: CidrPeer, labels: LabelSet) -> bool:
    """A CIDR peer matches a CIDR identity inside it and outside its excepts.

    The world identities stand for "every address no more specific prefix
    covers", so only a /0 peer of that family matches them.
    """
    if labels.source == SOURCE_K8S:
        return peer.pods and pod_cidr_matches(peer, labels)
    if labels.source == SOURCE_CIDR:
        network = cidr_network(labels)
        if not contains(peer.cidr, network):
            return False
        return not any(contains(exc, network) for exc in peer.excepts)
    if labels.source == SOURCE_RESERVED and peer.cidr.prefixlen == 0 and not peer.excepts:
        name = reserved_name(labels)
        return _WORLD_OF_FAMILY.get(name) == peer.cidr.version or name == "world"
    if labels.source == SOURCE_RESERVED and peer.cidr.prefixlen == 0:
        # A /0 with excepts still covers the addresses no other prefix claims.
        return _WORLD_OF_FAMILY.get(reserved_name(labels)) == peer.cidr.version
    return False


def entity_matches(entity: str, labels: LabelSet) -> bool:
    if labels.source == SOURCE_K8S:
        return entity == "cluster"
    if labels.source == SOURCE_CIDR:
        families = _WORLD_FAMILY.get(entity, ())
        return cidr_network(labels).version in families
    if labels.source == SOURCE_RESERVED:
        return reserved_name(labels) in ENTITY_RESERVED.get(entity, frozenset())
    return False


def is_node_identity(labels: LabelSet) -> bool:
    return labels.source == SOURCE_RESERVED and reserved_name(labels) in NODE_IDENTITIES


def nodes_match(selectors: tuple[Selector, ...], labels: LabelSet, nodes: NodeView) -> bool:
    """Node peers: node addresses carry the host / remote-node identities.

    Identities do not tell nodes apart, so a node selector matches those
    identities when it selects at least one node (documented approximation).
    """
    if not is_node_identity(labels):
        return False
    return any(nodes.node_matches(selector) for selector in selectors)


def _holds(peer: CidrPeer, address: IPAddress) -> bool:
    return (
        peer.cidr.version == address.version
        and address in peer.cidr
        and not any(address in exc for exc in peer.excepts)
    )


def node_addresses_match(cidrs: Sequence[CidrPeer], labels: LabelSet, nodes: NodeView) -> bool:
    """Address-matching CIDR peers (`CidrPeer.pods`) and a node identity: matched when the
    peers hold every address the identity stands for (one peer per address may do), or any
    of them for a Deny (`any_node_address`). Exact when they hold all of them or none."""
    if not is_node_identity(labels):  # checked first: most identities offered are pods
        return False
    peers = [c for c in cidrs if c.pods]
    if not peers:
        return False
    addresses = nodes.node_addresses(reserved_name(labels))
    if not addresses:
        return False
    held = [any(_holds(peer, address) for peer in peers) for address in addresses]
    return any(held) if any(p.any_node_address for p in peers) else all(held)


def fqdns_match(selectors: tuple[str, ...], labels: LabelSet, nodes: NodeView) -> bool:
    """toFQDNs: a CIDR identity of an address DNS answers named, for a name a selector
    selects. The names live in the engine (learned, not labels): a selection changes
    when they do, and the engine refreshes the toFQDNs selections then."""
    if labels.source != SOURCE_CIDR:
        return False
    names = nodes.fqdn_names(cidr_network(labels))
    return bool(names) and selectors_match(selectors, names)


def peers_match(peers: Peers, labels: LabelSet, nodes: NodeView) -> bool:
    if peers.any_peer:
        return True
    if any(selector.matches(labels) for selector in peers.selectors):
        return True
    if any(cidr_matches(cidr, labels) for cidr in peers.cidrs):
        return True
    if node_addresses_match(peers.cidrs, labels, nodes):
        return True
    if any(entity_matches(entity, labels) for entity in peers.entities):
        return True
    if peers.fqdns and fqdns_match(peers.fqdns, labels, nodes):
        return True
    return bool(peers.nodes) and nodes_match(peers.nodes, labels, nodes)
