"""`--fqdn` on L3/L4 flows: the decoder fills source_names / destination_names from the names
a local pod's lookups gave the peer (the agent's DNS proxy cache, through the metadata's
``fqdn_names``), and the Observer's FQDN filters select them."""

from __future__ import annotations

from collections.abc import Sequence

import observe_helpers as h

from septum.dataplane.observe import record as r
from septum.dataplane.observe.api.flow import flow_pb2
from septum.dataplane.observe.decoder import DecoderConfig, FlowDecoder
from septum.dataplane.observe.filters import compile_filter

OUTSIDE = "203.0.113.10"


class Learned:
    """What the xwing's lookups taught the DNS proxy."""

    generation = 0

    def names_of(self, endpoint: str, address: str) -> Sequence[str]:
        return ["api.outside.example"] if (endpoint, address) == ("default/xwing", OUTSIDE) else []


class Lookups:
    """Names that come and go, as the DNS proxy's cache has them (generation moves)."""

    def __init__(self) -> None:
        self.names: dict[tuple[str, str], list[str]] = {}
        self.generation = 0

    def set(self, endpoint: str, address: str, names: list[str]) -> None:
        self.names[(endpoint, address)] = names
        self.generation += 1

    def names_of(self, endpoint: str, address: str) -> Sequence[str]:
        return self.names.get((endpoint, address), [])


def _flow(names: Learned | None, *args: object, **fields: object) -> flow_pb2.Flow:
    metadata = h.metadata()
    metadata.fqdn_names = names  # type: ignore[attr-defined]  # set by the agent's DNS proxy
    decoder = FlowDecoder(metadata, DecoderConfig(node_name=h.NODE))
    return decoder.decode(r.EVENT.unpack(h.event(*args, **fields)), 1)  # type: ignore[arg-type]


def test_a_pods_flow_to_a_learned_address_names_it_and_the_fqdn_filters_select_it() -> None:
    to_outside = _flow(Learned(), h.XWING, OUTSIDE, dst_port=80)
    assert list(to_outside.destination_names) == ["api.outside.example"]
    assert not to_outside.source_names
    reply = _flow(Learned(), OUTSIDE, h.XWING, src_port=80, dst_port=40000)
    assert list(reply.source_names) == ["api.outside.example"]  # the peer's names, from the pod's
    to_fqdn = compile_filter(flow_pb2.FlowFilter(destination_fqdn=["*.outside.example"]))
    from_fqdn = compile_filter(flow_pb2.FlowFilter(source_fqdn=["api.outside.example"]))
    assert to_fqdn(to_outside) and not to_fqdn(reply)
    assert from_fqdn(reply) and not from_fqdn(to_outside)


def test_no_names_without_lookups_or_without_a_dns_proxy() -> None:
    assert not _flow(Learned(), h.TIEFIGHTER, OUTSIDE).destination_names  # another pod's lookups
    assert not _flow(None, h.XWING, OUTSIDE).destination_names  # no DNS proxy on the node
    assert not _flow(Learned(), h.XWING, h.DEATHSTAR).destination_names


def test_a_name_learned_after_the_first_flow_shows_on_the_next_and_an_expired_one_goes() -> None:
    """The encoded path caches a template per flow shape: learning or expiring a name does
    not move the metadata's generation, so the names' own generation keys it too."""
    metadata = h.metadata()
    lookups = Lookups()
    metadata.fqdn_names = lookups  # type: ignore[attr-defined]
    decoder = FlowDecoder(metadata, DecoderConfig(node_name=h.NODE))
    rec = r.EVENT.unpack(h.event(h.XWING, OUTSIDE, dst_port=80))

    def names_on_the_wire() -> list[str]:
        flow_bytes, _ = decoder.encode(rec, 1)  # type: ignore[arg-type]
        return list(flow_pb2.Flow.FromString(flow_bytes).destination_names)

    assert names_on_the_wire() == []  # before the lookup: the template has no names
    lookups.set("default/xwing", OUTSIDE, ["api.outside.example"])
    assert names_on_the_wire() == ["api.outside.example"]
    lookups.set("default/xwing", OUTSIDE, [])  # expired
    assert names_on_the_wire() == []
