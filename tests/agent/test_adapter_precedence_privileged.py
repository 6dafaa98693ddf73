"""The engine's lookup precedence holds in the kernel: engine policies (compiled by the real
engine from random rule sets, plus hand-written cases) go through the adapter into a real
datapath, and for each (peer, protocol, port) probe the verdict, deciding rule and L7 proxy
port that BPF_PROG_TEST_RUN reports equal what DirectionPolicy.lookup says."""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given

from septum.agent.adapter import endpoint_policy
from septum.dataplane import abi
from septum.dataplane.config import DatapathConfig
from septum.dataplane.datapath import EndpointSpec, NodeDatapath
from septum.dataplane.events import decode_events
from septum.dataplane.packets import TCP_SYN, ether, icmp, ipv4, tcp4, udp4
from septum.operator.engine.entries import DirectionPolicy
from septum.operator.engine.rules import Direction

from .policies import (
    GRE,
    ICMP,
    L7_PROXY_PORT,
    PROBE_PEERS,
    PROBES,
    TCP,
    UDP,
    Outcome,
    directed_policies,
    engine_outcome,
    examples,
    identity_policy,
)
from .test_adapter import HAND_WRITTEN

pytestmark = pytest.mark.privileged

POD = "10.99.0.1"
ENDPOINT_ID, IFINDEX, POD_IDENTITY = 11, 1, 5001  # on the loopback, never attached
# Each peer identity owns a /16, and every probe comes from a fresh address (and port) in
# it: each probe is a new flow, so no conntrack entry or drop-event rate limit (per flow,
# and ICMP errors or GRE have no ports) hides it.
PEER_NETWORKS = {peer: f"10.{60 + index}" for index, peer in enumerate(PROBE_PEERS)}


@pytest.fixture(scope="module")
def node() -> Iterator[NodeDatapath]:
    name = f"t-agent-{secrets.token_hex(2)}"
    datapath = NodeDatapath(DatapathConfig(node_name=name))
    try:
        datapath.upsert_endpoint(
            EndpointSpec(
                ENDPOINT_ID, IFINDEX, POD_IDENTITY, ipv4=POD, check_source=False, attach=False
            )
        )
        datapath.upsert_prefixes({f"{net}.0.0/16": peer for peer, net in PEER_NETWORKS.items()})
        yield datapath
    finally:
        datapath.teardown()
        assert not (Path("/sys/fs/bpf/septum") / name).exists(), f"pins of {name} left behind"


# host numbers in a /16 whose last byte is neither 0 nor 255; some 25 per peer and example
_hosts = (host for host in itertools.count(1) if 0 < host & 0xFF < 255)
_ports = itertools.cycle(range(20000, 60000))
PROXY_DROPS = (abi.DropReason.PROXY_LOOKUP_FAILED, abi.DropReason.PROXY_ASSIGN_FAILED)


def _packet(direction: Direction, peer: int, protocol: int, port: int) -> bytes:
    host = next(_hosts)
    assert host < 0xFF00, "out of fresh addresses: fewer examples or probes"
    peer_ip = f"{PEER_NETWORKS[peer]}.{host >> 8}.{host & 0xFF}"
    src, dst = (peer_ip, POD) if direction is Direction.INGRESS else (POD, peer_ip)
    if protocol == TCP:
        return tcp4(src, dst, next(_ports), port, TCP_SYN)
    if protocol == UDP:
        return udp4(src, dst, next(_ports), port)
    if protocol == ICMP:
        return ether(ipv4(src, dst, ICMP, icmp(port, ident=next(_ports))))
    assert (protocol, port) == (GRE, 0)
    return ether(ipv4(src, dst, GRE, bytes(4)))


def _kernel_outcome(
    node: NodeDatapath, direction: Direction, peer: int, protocol: int, port: int
) -> Outcome:
    reader = node.flow_reader()
    reader.read_raw()
    program = abi.PROG_TO_POD if direction is Direction.INGRESS else abi.PROG_FROM_POD
    node.test_run(program, _packet(direction, peer, protocol, port), ifindex=IFINDEX)
    events = decode_events(reader.read_raw())
    probe = f"{direction.value} {peer} {protocol}/{port}: events {events}"
    event, *after = events
    if event.l7_proxy_port and after:
        # No proxy listens here (and none takes ICMP or GRE): the L7 redirect fails closed
        # after the policy decision (docs/datapath.md, "L7 redirect"); the decision is the
        # first event.
        (closed,) = after
        assert closed.drop_reason in PROXY_DROPS, probe
    else:
        assert not after, probe
    return abi.Verdict(event.verdict), event.rule_id, event.l7_proxy_port


def _check(node: NodeDatapath, direction: Direction, policy: DirectionPolicy) -> None:
    node.replace_policy(
        ENDPOINT_ID, endpoint_policy(identity_policy(direction, policy), L7_PROXY_PORT)
    )
    node.flush_conntrack()
    wrong = []
    for peer in PROBE_PEERS:
        for protocol, port in PROBES:
            want = engine_outcome(policy, peer, protocol, port, L7_PROXY_PORT)
            got = _kernel_outcome(node, direction, peer, protocol, port)
            if got != want:
                wrong.append(((peer, protocol, port), want, got))
    assert wrong == [], f"(probe, engine, kernel) for entries {policy.entries}"


@pytest.mark.parametrize("direction", Direction)
@pytest.mark.parametrize("name", HAND_WRITTEN)
def test_hand_written_cases(node, name, direction):
    policy = HAND_WRITTEN[name]
    entries = tuple(e._replace(direction=direction) for e in policy.entries)
    _check(node, direction, DirectionPolicy(True, entries, policy.protocols))


@examples(150)
@given(directed_policies)
def test_the_kernel_decides_as_the_engine(node, case):
    direction, policy = case
    _check(node, direction, policy)
