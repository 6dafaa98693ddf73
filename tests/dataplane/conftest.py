"""Fixtures for the datapath tests: a node datapath (its own pins, its own namespaces) and
pods as network namespaces.  Everything a fixture creates is removed even when a test
fails, and the removal is asserted."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from septum.dataplane import abi
from septum.dataplane.config import DatapathConfig
from septum.dataplane.datapath import EndpointSpec, NodeDatapath
from septum.dataplane.sandbox import Sandbox, sandbox_namespaces

# test-run endpoint: registered on the loopback (ifindex 1), never attached
TESTRUN_IFINDEX = 1
TESTRUN_ENDPOINT = 11
TESTRUN_IDENTITY = 5001
POD_IP = "10.99.0.1"
POD_IP6 = "fd00:99::1"


def _unique() -> str:
    return secrets.token_hex(2)


@pytest.fixture
def node_name() -> Iterator[str]:
    name = f"t-dp-{_unique()}"
    yield name
    assert not (Path("/sys/fs/bpf/septum") / name).exists(), f"pins of {name} left behind"


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    prefix = f"sdp{_unique()}"
    box = Sandbox(prefix)
    try:
        yield box
    finally:
        box.close()
        assert sandbox_namespaces(prefix) == [], "network namespaces left behind"


@pytest.fixture
def node(node_name: str, sandbox: Sandbox) -> Iterator[NodeDatapath]:
    """A datapath for a node whose interfaces live in the sandbox's node namespace."""
    datapath = NodeDatapath(DatapathConfig(node_name=node_name, netns=sandbox.node_ns))
    try:
        yield datapath
    finally:
        datapath.teardown()


TESTRUN_SPEC = EndpointSpec(
    TESTRUN_ENDPOINT,
    TESTRUN_IFINDEX,
    TESTRUN_IDENTITY,
    ipv4=POD_IP,
    ipv6=POD_IP6,
    check_source=False,
    attach=False,
)


@pytest.fixture(scope="module")
def _testrun_datapath() -> Iterator[NodeDatapath]:
    # Loading (verifying) the object takes about a second: one load per test module.
    name = f"t-dp-{_unique()}"
    datapath = NodeDatapath(DatapathConfig(node_name=name))
    try:
        yield datapath
    finally:
        datapath.teardown()
        assert not (Path("/sys/fs/bpf/septum") / name).exists(), f"pins of {name} left behind"


@pytest.fixture
def testrun_node(_testrun_datapath: NodeDatapath) -> NodeDatapath:
    """A datapath with one endpoint on the loopback, for BPF_PROG_TEST_RUN only; its
    endpoint, policy and conntrack start empty in every test."""
    datapath = _testrun_datapath
    if TESTRUN_ENDPOINT in datapath.endpoint_ids():
        datapath.remove_endpoint(TESTRUN_ENDPOINT)
    datapath.flush_conntrack()
    datapath.upsert_endpoint(TESTRUN_SPEC)
    return datapath


# Runner.outcome() of a forwarded packet, and of one dropped for `reason`
FORWARDED = (0, abi.Verdict.FORWARDED, abi.DropReason.NONE)


def dropped(reason: abi.DropReason) -> tuple[int, abi.Verdict, int]:
    return (2, abi.Verdict.DROPPED, reason)


class Runner:
    """Runs packets through a program and says which single counter moved."""

    FORWARD = 0  # TC_ACT_OK
    DROP = 2  # TC_ACT_SHOT

    def __init__(self, datapath: NodeDatapath) -> None:
        self.datapath = datapath

    def retval(self, packet: bytes, program: str = abi.PROG_FROM_POD) -> int:
        return self.datapath.test_run(program, packet, ifindex=TESTRUN_IFINDEX).retval

    def outcome(
        self, packet: bytes, program: str = abi.PROG_FROM_POD
    ) -> tuple[int, abi.Verdict, int]:
        """(return code, counted verdict, counted drop reason); asserts exactly one counter
        moved by exactly one packet."""
        before = self.datapath.counters()
        retval = self.retval(packet, program)
        after = self.datapath.counters()
        moved = [
            key
            for key, value in after.items()
            if value.packets != (before[key].packets if key in before else 0)
        ]
        assert len(moved) == 1, f"counters moved: {moved}"
        key = moved[0]
        assert after[key].packets - (before[key].packets if key in before else 0) == 1
        return retval, key.verdict, key.drop_reason


@pytest.fixture
def runner(testrun_node: NodeDatapath) -> Runner:
    return Runner(testrun_node)


def with_prefixes(prefixes: dict[str, int]) -> Callable[..., Iterator[NodeDatapath]]:
    """A `node` fixture: the test-run datapath with these ipcache prefixes, removed after."""

    @pytest.fixture
    def node(testrun_node: NodeDatapath) -> Iterator[NodeDatapath]:
        testrun_node.upsert_prefixes(prefixes)
        try:
            yield testrun_node
        finally:
            for cidr in prefixes:
                testrun_node.remove_prefix(cidr)

    return node
