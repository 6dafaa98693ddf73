"""Pod classes: which pods of one label set must still get identities of their own.

Identities are label sets, but two upstream rules read more than a pod's labels (a
NetworkPolicy's; an admin tier's `networks` match addresses as ipBlocks do), and the
datapath decides by the peer's identity alone:

- an `ipBlock` matches a pod by its *address*: pods of one label set whose addresses fall
  on different sides of an ipBlock boundary (`cidr`, `except`) must be told apart;
- a named port means the *destination pod's own* container port: pods of one label set
  that name a port differently (a rollout renumbering it) must be told apart;
- a podSelector reads the pod's *own* labels, including those the label filter keeps out
  of identities (`statefulset.kubernetes.io/pod-name`, say): pods of one label set that
  differ in such a label some NetworkPolicy or admin-tier selector names must be told apart.

So each pod's class is (its address blocks, its named ports, its selected own labels). The
pods of a label set whose class is the default one (addresses in no NetworkPolicy prefix,
the label set's reference named ports, no selected own label) keep the label set's own
identity; every other class is the label set plus the keys below, an identity of its own
allocated from the node-local range (as CIDR identities: the operator never sees it, each
agent numbers its own). All these keys sit under `io.kubernetes.pod.`, which a pod cannot
set on itself and a NetworkPolicy selector never reads as such (`labels.is_added_key`; an
own-label requirement reads its key's copy, `selectors.Requirement.own`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from septum.operator.engine.cidrs import contains
from septum.operator.engine.cluster import IPAddress
from septum.operator.engine.labels import OWN_LABEL_PREFIX, SOURCE_K8S, LabelSet
from septum.operator.engine.rules import CidrPeer, IPNetwork

# Every address of the pod, as the most specific NetworkPolicy prefix holding it
# (its family's /0 if none), comma-separated; absent in the default class.
ADDRESS_BLOCKS_KEY = "io.kubernetes.pod.address-blocks"
# The pod's named container ports, `name/protocol/port` comma-separated (present, maybe
# empty, on every split class).
NAMED_PORTS_KEY = "io.kubernetes.pod.named-ports"
CLASS_KEYS = (ADDRESS_BLOCKS_KEY, NAMED_PORTS_KEY)

V4_ALL = ipaddress.ip_network("0.0.0.0/0")
V6_ALL = ipaddress.ip_network("::/0")
NamedPorts = tuple[tuple[str, int, int], ...]
OwnLabels = tuple[tuple[str, str], ...]  # (key, value) of the pod's selected filtered labels


def address_blocks(ips: Iterable[IPAddress], prefixes: Sequence[IPNetwork]) -> str | None:
    """The pod's address blocks, or None for the default class.

    Default: no NetworkPolicy names a prefix at all, or every address is IPv4 and lies in
    no named prefix but 0.0.0.0/0. A default identity therefore stands for IPv4 addresses
    that only a 0.0.0.0/0 ipBlock can match.
    """
    if not prefixes:
        return None
    cells: set[IPNetwork] = set()
    for ip in ips:
        best: IPNetwork = V4_ALL if ip.version == 4 else V6_ALL
        for prefix in prefixes:
            if prefix.version == ip.version and ip in prefix and prefix.prefixlen > best.prefixlen:
                best = prefix
        cells.add(best)
    if all(cell == V4_ALL for cell in cells):
        return None
    return ",".join(str(c) for c in sorted(cells, key=lambda c: (c.version, str(c))))


def named_ports_text(named: NamedPorts) -> str:
    return ",".join(f"{name}/{protocol}/{port}" for name, protocol, port in sorted(named))


def class_labels(
    base: LabelSet, blocks: str | None, named: NamedPorts, own: OwnLabels = ()
) -> LabelSet:
    """The label set of a split class: `base` plus its address blocks, named ports and
    selected own labels (each under `labels.OWN_LABEL_PREFIX`)."""
    extra = {NAMED_PORTS_KEY: named_ports_text(named)}
    if blocks is not None:
        extra[ADDRESS_BLOCKS_KEY] = blocks
    for key, value in own:
        extra[OWN_LABEL_PREFIX + key] = value
    return LabelSet.of(base.source, (*base.items, *extra.items()))


def is_split(labels: LabelSet) -> bool:
    """Whether `labels` is a split class (a node-local identity, not the operator's)."""
    return labels.source == SOURCE_K8S and labels.has(NAMED_PORTS_KEY)


def same_blocks(one: LabelSet, other: LabelSet) -> bool:
    return one.get(ADDRESS_BLOCKS_KEY) == other.get(ADDRESS_BLOCKS_KEY)


def pod_cidr_matches(peer: CidrPeer, labels: LabelSet) -> bool:
    """An address-matching CIDR peer (ipBlock, admin `networks`) matches a pod identity
    when it holds every address block of the identity's pods: exact for single-stack pods;
    a dual-stack pod is matched only by a rule that holds both of its addresses (never
    more than upstream allows)."""
    text = labels.get(ADDRESS_BLOCKS_KEY)
    cells = [V4_ALL] if text is None else [ipaddress.ip_network(c) for c in text.split(",")]
    return all(
        contains(peer.cidr, cell) and not any(contains(exc, cell) for exc in peer.excepts)
        for cell in cells
    )
