"""Bad input to the datapath API is refused with an error naming the field, and a refused
call leaves the maps as they were: nothing half-applied."""

from __future__ import annotations

import pytest

from septum.dataplane.abi import TrafficDirection
from septum.dataplane.config import DatapathConfig
from septum.dataplane.datapath import EndpointSpec, NodeDatapath
from septum.dataplane.errors import (
    AttachError,
    DatapathError,
    EndpointError,
    MapFullError,
    PolicyEntryError,
    PrefixError,
    ProgramError,
)
from septum.dataplane.policy import EndpointPolicy, PolicyEntry

pytestmark = pytest.mark.privileged


@pytest.fixture
def small(node_name):
    node = NodeDatapath(
        DatapathConfig(node_name=node_name, ipcache_hosts=4, ipcache_cidrs=4, prefilter_entries=2)
    )
    try:
        yield node
    finally:
        node.teardown()


def _hosts(node: NodeDatapath) -> dict[str, int]:
    return {bytes(k.addr)[:4].hex(): v.identity for k, v in node.ipcache_hosts.items()}


def test_ipcache_upsert_is_all_or_nothing_when_a_map_fills(small):
    small.upsert_prefixes({"10.0.0.1/32": 7, "10.0.0.2/32": 8, "10.1.0.0/16": 9})
    before_hosts = _hosts(small)
    before_cidrs = len(list(small.ipcache_cidrs.keys()))
    # one existing host re-mapped, four new ones: five hosts do not fit in four
    batch = {"10.0.0.1/32": 70} | {f"10.0.0.{i}/32": 100 + i for i in range(3, 7)}
    with pytest.raises(MapFullError, match=r"sep_ipcache_h.*DatapathConfig\.ipcache_hosts"):
        small.upsert_prefixes(batch | {"10.2.0.0/16": 10})
    assert _hosts(small) == before_hosts == {"0a000001": 7, "0a000002": 8}
    assert len(list(small.ipcache_cidrs.keys())) == before_cidrs
    small.upsert_prefixes({"10.0.0.1/32": 70, "10.0.0.3/32": 103})  # what fits still goes in
    assert _hosts(small) == {"0a000001": 70, "0a000002": 8, "0a000003": 103}


@pytest.mark.parametrize("identity", [0, -1, 2**32, "5"])
def test_a_prefix_needs_a_real_identity(small, identity):
    with pytest.raises(ValueError, match=r"identity of prefix '10\.9\.0\.0/16'"):
        small.upsert_prefixes({"10.9.0.1/32": 5, "10.9.0.0/16": identity})
    assert _hosts(small) == {}


def test_prefilter_replacement_that_fits_is_never_refused_half_way(small):
    small.set_prefilter({"192.0.2.0/24": 1, "198.51.100.0/24": 2})
    small.set_prefilter({"203.0.113.0/24": 3, "198.51.100.0/24": 4})  # full map, new list fits
    assert sorted(v.rule_id for _, v in small.prefilter_map.items()) == [3, 4]
    with pytest.raises(MapFullError, match=r"DatapathConfig\.prefilter_entries"):
        small.set_prefilter(["192.0.2.0/25", "192.0.2.128/25", "198.51.100.0/25"])
    assert sorted(v.rule_id for _, v in small.prefilter_map.items()) == [3, 4]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"ipv4": "10.0.0.300"}, r"^ipv4: "),
        ({"ipv4": "fd00::1"}, r"^ipv4: 'fd00::1' is not an IPv4 address"),
        ({"ipv6": "10.0.0.1"}, r"^ipv6: '10.0.0.1' is not an IPv6 address"),
        ({"identity": 0}, r"^identity: 0 is not a security identity"),
        ({"identity": -1}, r"^identity: -1 is not a security identity"),
        ({"endpoint_id": "2"}, r"^endpoint_id: '2' is not an integer"),
    ],
)
def test_bad_endpoint_fields_are_named_and_nothing_is_written(small, fields, message):
    spec = {"endpoint_id": 1, "interface": 1, "identity": 5000, "ipv4": "10.0.0.5"}
    with pytest.raises(EndpointError, match=message):
        small.upsert_endpoint(EndpointSpec(**(spec | fields), attach=False))
    assert small.endpoint_ids() == []
    assert list(small.endpoints_map.keys()) == []


UNKNOWN_ENDPOINT = 999


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda n: n.upsert_prefix("10.0.0.0/33", 5), PrefixError),
        (lambda n: n.upsert_prefixes({"10.0.0.0/8": 0}), PrefixError),
        (lambda n: n.remove_prefix("not a prefix"), PrefixError),
        (lambda n: n.set_prefilter({"10.0.0.0/8": 2**32}), PrefixError),
        (lambda n: n.set_prefilter({"10.0.0.0/8": "1"}), PrefixError),
        (lambda n: n.set_prefilter(["10.0.0.0/40"]), PrefixError),
        (lambda n: n.upsert_endpoint(EndpointSpec(0, 1, 5000, attach=False)), EndpointError),
        (lambda n: n.upsert_endpoint(EndpointSpec(1, "nope0", 5000)), EndpointError),
        (lambda n: n.remove_endpoint(UNKNOWN_ENDPOINT), EndpointError),
        (lambda n: n.set_audit(UNKNOWN_ENDPOINT, True), EndpointError),
        (lambda n: n.policy(UNKNOWN_ENDPOINT), EndpointError),
        (lambda n: n.replace_policy(UNKNOWN_ENDPOINT, EndpointPolicy()), EndpointError),
        (lambda n: n.flush_conntrack(UNKNOWN_ENDPOINT), EndpointError),
        (lambda n: n.attach_uplink("nope0"), EndpointError),
        (lambda n: n.detach_uplink("nope0"), AttachError),
        (lambda n: n.test_run("nope", bytes(64)), ProgramError),
    ],
)
def test_public_calls_refuse_bad_input_with_a_datapath_error(small, call, error):
    with pytest.raises(DatapathError) as caught:
        call(small)
    assert type(caught.value) is error


def test_a_bad_policy_entry_is_a_datapath_error(small):
    small.upsert_endpoint(EndpointSpec(1, 1, 5000, attach=False))
    bad = EndpointPolicy(
        enforce_ingress=True, entries=(PolicyEntry(TrafficDirection.INGRESS, port=70000),)
    )
    with pytest.raises(PolicyEntryError, match=r"entries\[0\]\.port"):
        small.replace_policy(1, bad)
