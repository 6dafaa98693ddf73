"""tcx links where the kernel has them (found by probing), clsact filters where not."""

from __future__ import annotations

import pytest
from pyroute2 import IPRoute

from septum.dataplane import attach, netns
from septum.dataplane.abi import TrafficDirection
from septum.dataplane.datapath import EndpointSpec
from septum.dataplane.policy import EndpointPolicy, PolicyEntry
from septum.dataplane.sandbox import TcpServer, tcp_connect

pytestmark = pytest.mark.privileged


def _bpf_filters(ns: str, ifindex: int) -> int:
    with netns.entered(ns), IPRoute() as ipr:
        found = 0
        for parent in (0xFFFFFFF2, 0xFFFFFFF3):  # clsact ingress / egress
            found += len(ipr.get_filters(index=ifindex, parent=parent))
        return found


@pytest.mark.parametrize("mode", ["probe", "clsact"])
def test_attach_enforces_and_detach_cleans_up(node, sandbox, monkeypatch, mode):
    if mode == "clsact":
        monkeypatch.setattr(attach, "_tcx_available", False)
    client = sandbox.add_pod("c", "10.95.0.1")
    server = sandbox.add_pod("s", "10.95.0.2")
    node.upsert_prefixes({"10.95.0.1/32": 31, "10.95.0.2/32": 32})
    node.upsert_endpoint(EndpointSpec(1, client.host_interface, 31, client.ipv4))
    node.upsert_endpoint(EndpointSpec(2, server.host_interface, 32, server.ipv4))
    if mode == "probe":
        # this kernel (6.6+) has tcx: the probe must have found it
        assert attach.tcx_available() is True
        assert (node.pin_dir / "links" / "ep2-ingress").exists()
    else:
        assert _bpf_filters(sandbox.node_ns, server.ifindex) > 0
    tcp_server = TcpServer(server.name, server.ipv4, 8080)
    try:
        node.replace_policy(2, EndpointPolicy(enforce_ingress=True))
        assert not tcp_connect(client.name, server.ipv4, 8080, timeout_s=0.5)
        node.replace_policy(
            2, EndpointPolicy.selecting([PolicyEntry(TrafficDirection.INGRESS, 31, 6, 8080)])
        )
        assert tcp_connect(client.name, server.ipv4, 8080)
    finally:
        tcp_server.close()
    node.remove_endpoint(2)
    # detached: no link and no filter left on the server's veth
    assert not (node.pin_dir / "links" / "ep2-ingress").exists()
    if mode == "clsact":
        assert _bpf_filters(sandbox.node_ns, server.ifindex) == 0


def _has_clsact(ns: str, ifindex: int) -> bool:
    with netns.entered(ns), IPRoute() as ipr:
        return any(q.get_attr("TCA_KIND") == "clsact" for q in ipr.get_qdiscs(index=ifindex))


@pytest.mark.parametrize("existed_before", [True, False])
def test_detach_removes_a_clsact_hook_only_if_attach_created_it(
    node, sandbox, monkeypatch, existed_before
):
    monkeypatch.setattr(attach, "_tcx_available", False)
    pod = sandbox.add_pod("p", "10.96.0.1")
    if existed_before:
        with netns.entered(sandbox.node_ns), IPRoute() as ipr:
            ipr.tc("add", "clsact", pod.ifindex)
    assert _has_clsact(sandbox.node_ns, pod.ifindex) is existed_before
    node.upsert_endpoint(EndpointSpec(1, pod.host_interface, 41, pod.ipv4))
    assert _has_clsact(sandbox.node_ns, pod.ifindex)
    assert _bpf_filters(sandbox.node_ns, pod.ifindex) > 0
    node.remove_endpoint(1)
    assert _bpf_filters(sandbox.node_ns, pod.ifindex) == 0
    # libbpf-bootstrap's tc.c: a hook someone else made stays, with whatever is on it
    assert _has_clsact(sandbox.node_ns, pod.ifindex) is existed_before
