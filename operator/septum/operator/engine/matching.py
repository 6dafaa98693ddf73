"""Does a rule's peer side match an identity? Decided from the identity's labels alone.

The compiler caches these answers per identity number; `explain` calls the same
predicates on label sets directly, so hypothetical endpoints need no number.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from functools import lru_cache

from septum.operator.engine.cidrs import contains
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


def nodes_match(
    selectors: tuple[Selector, ...], labels: LabelSet, node_matches: Callable[[Selector], bool]
) -> bool:
    """Node peers: node addresses carry the host / remote-node identities.

    Identities do not tell nodes apart, so a node selector matches those
    identities when it selects at least one node (documented approximation).
    """
    if labels.source != SOURCE_RESERVED or reserved_name(labels) not in ("host", "remote-node"):
        return False
    return any(node_matches(selector) for selector in selectors)


def peers_match(peers: Peers, labels: LabelSet, node_matches: Callable[[Selector], bool]) -> bool:
    if peers.any_peer:
        return True
    if any(selector.matches(labels) for selector in peers.selectors):
        return True
    if any(cidr_matches(cidr, labels) for cidr in peers.cidrs):
        return True
    if any(entity_matches(entity, labels) for entity in peers.entities):
        return True
    return bool(peers.nodes) and nodes_match(peers.nodes, labels, node_matches)
