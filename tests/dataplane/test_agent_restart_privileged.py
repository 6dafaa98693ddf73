"""What a second agent process of the same node finds and does: the pinned maps and links of
the first keep enforcing (an agent restart never opens a pod), and its own calls take over
the pinned state instead of clashing with it; refused calls leave nothing behind."""

from __future__ import annotations

import json
import subprocess

import pytest

from septum.dataplane import abi, attach
from septum.dataplane.abi import TrafficDirection
from septum.dataplane.config import DatapathConfig
from septum.dataplane.datapath import EndpointSpec, NodeDatapath
from septum.dataplane.errors import AttachError, EndpointError, MapFullError
from septum.dataplane.policy import EndpointPolicy, PolicyEntry
from septum.dataplane.sandbox import TcpServer, tcp_connect

pytestmark = pytest.mark.privileged

INGRESS = TrafficDirection.INGRESS
CLIENT_ID, SERVER_ID = 41, 42


class Agents:
    """The node's agent processes, one after the other; the last one is torn down."""

    def __init__(self, config: DatapathConfig) -> None:
        self.current = NodeDatapath(config)

    def restart(self) -> NodeDatapath:
        """The agent process ends (its handles close; pins stay) and a new one starts."""
        self.current.close()
        self.current = NodeDatapath(self.current.config)
        return self.current


@pytest.fixture
def agents(node_name, sandbox):
    agents = Agents(DatapathConfig(node_name=node_name, netns=sandbox.node_ns))
    try:
        yield agents
    finally:
        agents.current.teardown()


def _pinned_links(node: NodeDatapath) -> dict[str, tuple[int, int]]:
    """Every link the node pinned: pin name -> (link id, id of the program it runs)."""
    found = {}
    for pin in sorted((node.pin_dir / "links").iterdir()):
        shown = subprocess.run(
            ["bpftool", "-j", "link", "show", "pinned", str(pin)],
            check=True,
            capture_output=True,
            text=True,
        )
        link = json.loads(shown.stdout)
        found[pin.name] = (link["id"], link["prog_id"])
    return found


def _policy_keys(node: NodeDatapath, endpoint_id: int) -> set[tuple[int, int]]:
    """(generation, peer identity) of the endpoint's policy keys in the map."""
    return {
        (k.generation, k.peer_identity)
        for k in node.policy_map.keys()
        if k.endpoint_id == endpoint_id
    }


@pytest.fixture
def pods(agents, sandbox):
    node = agents.current
    client = sandbox.add_pod("c", "10.93.0.1")
    server = sandbox.add_pod("s", "10.93.0.2")
    node.upsert_prefixes({"10.93.0.1/32": CLIENT_ID, "10.93.0.2/32": SERVER_ID})
    node.upsert_endpoint(EndpointSpec(1, client.host_interface, CLIENT_ID, client.ipv4))
    node.upsert_endpoint(EndpointSpec(2, server.host_interface, SERVER_ID, server.ipv4))
    server_socket = TcpServer(server.name, server.ipv4, 8080)
    try:
        yield client, server
    finally:
        server_socket.close()


def test_a_restarted_agent_keeps_enforcing_then_takes_over(agents, pods):
    client, server = pods
    node = agents.current
    only_9999 = EndpointPolicy.selecting([PolicyEntry(INGRESS, CLIENT_ID, 6, 9999)])
    node.replace_policy(2, only_9999)
    assert not tcp_connect(client.name, server.ipv4, 8080, timeout_s=0.5)
    before = _policy_keys(node, 2)
    links_before = _pinned_links(node)
    assert sorted(links_before) == ["ep1-egress", "ep1-ingress", "ep2-egress", "ep2-ingress"]

    second = agents.restart()
    # the new agent re-registers its pods: the pinned policy stays in force
    second.upsert_endpoint(EndpointSpec(1, client.host_interface, CLIENT_ID, client.ipv4))
    second.upsert_endpoint(EndpointSpec(2, server.host_interface, SERVER_ID, server.ipv4))
    assert _policy_keys(second, 2) == before
    assert not tcp_connect(client.name, server.ipv4, 8080, timeout_s=0.5)

    # its first replace writes the idle generation, switches, and drops the old one
    second.replace_policy(2, EndpointPolicy.selecting([PolicyEntry(INGRESS, CLIENT_ID, 6, 8080)]))
    assert tcp_connect(client.name, server.ipv4, 8080)
    [old_generation] = {g for g, _ in before}
    after = _policy_keys(second, 2)
    assert {g for g, _ in after} == {old_generation ^ 1}  # the old generation is gone
    assert {p for _, p in after} == {CLIENT_ID}
    # the pinned tc links were taken over: the same links (a second link per hook would
    # run both programs), with the new agent's programs swapped in
    links_after = _pinned_links(second)
    assert sorted(links_after) == sorted(links_before)
    for pin, (link_id, prog_id) in links_after.items():
        assert link_id == links_before[pin][0] and prog_id != links_before[pin][1]
    second.replace_policy(2, only_9999)
    assert not tcp_connect(client.name, server.ipv4, 8080, timeout_s=0.5)


def test_a_failed_takeover_leaves_the_earlier_links_enforcing(agents, pods, monkeypatch):
    client, server = pods
    node = agents.current
    node.replace_policy(2, EndpointPolicy(enforce_ingress=True))
    links_before = _pinned_links(node)
    second = agents.restart()
    real_attach = attach.attach_tc

    def egress_fails(prog_fd, ifindex, hook, pin):  # a fault the kernel will not give us
        if hook == "egress":
            raise AttachError("injected")
        return real_attach(prog_fd, ifindex, hook, pin)

    monkeypatch.setattr(attach, "attach_tc", egress_fails)
    with pytest.raises(AttachError, match="injected"):
        second.upsert_endpoint(EndpointSpec(2, server.host_interface, SERVER_ID, server.ipv4))
    monkeypatch.undo()
    # both of the pod's hooks still have a program, and its policy still holds
    assert set(_pinned_links(second)) == set(links_before)
    assert not tcp_connect(client.name, server.ipv4, 8080, timeout_s=0.5)
    second.upsert_endpoint(EndpointSpec(1, client.host_interface, CLIENT_ID, client.ipv4))
    second.upsert_endpoint(EndpointSpec(2, server.host_interface, SERVER_ID, server.ipv4))


def test_a_restarted_agent_takes_over_the_uplink(agents, sandbox):
    node = agents.current
    uplink = f"{sandbox.prefix}up"
    sandbox.add_outside("out", uplink, "203.0.113.1", ["203.0.113.10"])
    node.attach_uplink(uplink)
    [(link_id, prog_id)] = _pinned_links(node).values()
    second = agents.restart()
    second.attach_uplink(uplink)  # a second XDP link would be refused (EBUSY)
    [(pin, (link_after, prog_after))] = _pinned_links(second).items()
    assert pin == f"xdp-{uplink}" and link_after == link_id and prog_after != prog_id
    second.detach_uplink(uplink)
    assert list((second.pin_dir / "links").iterdir()) == []


def test_a_refused_policy_leaves_no_keys_for_a_later_replace(node_name):
    node = NodeDatapath(DatapathConfig(node_name=node_name, policy_entries=6))
    try:
        node.upsert_endpoint(EndpointSpec(1, 1, 5000, attach=False))
        node.replace_policy(1, EndpointPolicy.selecting([PolicyEntry(INGRESS, 7, 6, 80)]))
        node.close()
        node = NodeDatapath(node.config)  # the agent restarts
        # the new agent does not know endpoint 1's keys yet: room looks larger than it is
        node.upsert_endpoint(EndpointSpec(2, 2, 5001, attach=False))
        big = EndpointPolicy.selecting([PolicyEntry(INGRESS, 200 + i, 6, 80) for i in range(6)])
        with pytest.raises(MapFullError, match=r"DatapathConfig\.policy_entries"):
            node.replace_policy(2, big)
        assert _policy_keys(node, 2) == set()
        node.replace_policy(2, EndpointPolicy.selecting([PolicyEntry(INGRESS, 250, 6, 80)]))
        assert {peer for _, peer in _policy_keys(node, 2)} <= {0, 250}
    finally:
        node.teardown()


def test_one_interface_belongs_to_one_endpoint(testrun_node):
    with pytest.raises(EndpointError, match=r"^interface: 1 \(ifindex 1\) already belongs to"):
        testrun_node.upsert_endpoint(EndpointSpec(12, 1, 5002, attach=False))
    assert 12 not in testrun_node.endpoint_ids()


def test_a_pod_whose_programs_cannot_attach_is_not_added(node):
    with pytest.raises(AttachError):
        node.upsert_endpoint(EndpointSpec(5, 99999, 5000, "10.93.0.5"))
    assert node.endpoint_ids() == []
    assert list(node.endpoints_map.keys()) == []
    assert not (node.pin_dir / "links").exists() or list((node.pin_dir / "links").iterdir()) == []


def test_audit_changes_bump_the_revision(testrun_node):
    def revision() -> int:
        [value] = [v for k, v in testrun_node.endpoints_map.items() if k.ifindex == 1]
        return int(value.policy_revision)

    before = revision()
    testrun_node.set_audit(11, True)
    assert revision() == before + 1
    testrun_node.set_audit(11, False)
    assert revision() == before + 2


def test_unknown_uplink_is_named(testrun_node):
    with pytest.raises(AttachError, match=r"^interface: no XDP prefilter .* on 'nope0'"):
        testrun_node.detach_uplink("nope0")


def test_prefilter_rule_ids_are_checked_before_anything_changes(testrun_node):
    testrun_node.set_prefilter({"192.0.2.0/24": 7})
    for bad in ("x", -1, 2**32, True):
        with pytest.raises(ValueError, match=r"^rule id of prefix '203\.0\.113\.0/24'"):
            testrun_node.set_prefilter({"203.0.113.0/24": bad})
    assert [v.rule_id for _, v in testrun_node.prefilter_map.items()] == [7]
    testrun_node.set_prefilter([])


def test_cidr_rollback_restores_exact_keys(node_name):
    node = NodeDatapath(DatapathConfig(node_name=node_name, ipcache_cidrs=2))
    try:
        node.upsert_prefix("10.0.0.0/8", 1000)
        with pytest.raises(MapFullError):
            node.upsert_prefixes({"10.1.0.0/16": 2000, "10.2.0.0/16": 3000})
        cidrs = {
            (k.prefixlen, bytes(k.addr)[:2]): v.identity for k, v in node.ipcache_cidrs.items()
        }
        assert cidrs == {(abi.LPM_ADDR_PREFIX_FIXED + 8, b"\x0a\x00"): 1000}
    finally:
        node.teardown()
