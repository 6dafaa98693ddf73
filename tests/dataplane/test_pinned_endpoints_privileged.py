"""An endpoint's realized revision as the kernel holds it, and the pinned endpoints an
earlier agent left: listed, and removed when the new agent did not re-register them."""

from __future__ import annotations

import pytest

from septum.dataplane.abi import TrafficDirection
from septum.dataplane.config import DatapathConfig
from septum.dataplane.datapath import EndpointSpec, NodeDatapath
from septum.dataplane.endpoints import PinnedEndpoint
from septum.dataplane.policy import EndpointPolicy, PolicyEntry
from septum.dataplane.sandbox import TcpServer, tcp_connect

pytestmark = pytest.mark.privileged

INGRESS = TrafficDirection.INGRESS
CLIENT_ID, SERVER_ID, GONE_ID = 41, 42, 43


def test_endpoint_revision_follows_policy_writes_and_survives_a_restart(node_name, sandbox):
    config = DatapathConfig(node_name=node_name, netns=sandbox.node_ns)
    pod = sandbox.add_pod("r", "10.94.0.1")
    spec = EndpointSpec(3, pod.host_interface, SERVER_ID, pod.ipv4)
    current = first = NodeDatapath(config)
    try:
        first.upsert_endpoint(spec)
        initial = first.endpoint_revision(3)
        assert initial >= 1
        allow = EndpointPolicy.selecting([PolicyEntry(INGRESS, CLIENT_ID, 6, 80)])
        first.replace_policy(3, allow)
        written = first.endpoint_revision(3)
        assert written > initial
        first.replace_policy(3, allow)  # nothing changed: nothing written, same revision
        assert first.endpoint_revision(3) == written
        first.set_audit(3, True)
        realized = first.endpoint_revision(3)
        assert realized > written
        first.close()
        # a new agent process adopting the pod reports what the kernel holds
        current = second = NodeDatapath(config)
        second.upsert_endpoint(spec)
        assert second.endpoint_revision(3) == realized
    finally:
        current.teardown()


def test_pinned_endpoints_not_re_registered_are_removed(node_name, sandbox):
    config = DatapathConfig(node_name=node_name, netns=sandbox.node_ns)
    client = sandbox.add_pod("c", "10.95.0.1")
    server = sandbox.add_pod("s", "10.95.0.2")
    gone = sandbox.add_pod("g", "10.95.0.3")
    first = NodeDatapath(config)
    current = first
    try:
        first.upsert_prefixes(
            {"10.95.0.1/32": CLIENT_ID, "10.95.0.2/32": SERVER_ID, "10.95.0.3/32": GONE_ID}
        )
        first.upsert_endpoint(EndpointSpec(1, client.host_interface, CLIENT_ID, client.ipv4))
        first.upsert_endpoint(EndpointSpec(2, server.host_interface, SERVER_ID, server.ipv4))
        first.upsert_endpoint(EndpointSpec(3, gone.host_interface, GONE_ID, gone.ipv4))
        deny_client = EndpointPolicy.selecting([PolicyEntry(INGRESS, GONE_ID, 6, 80)])
        first.replace_policy(2, deny_client)
        first.replace_policy(3, EndpointPolicy(enforce_ingress=True))
        assert first.pinned_endpoints() == [
            PinnedEndpoint(1, client.ifindex, client.host_interface, "10.95.0.1"),
            PinnedEndpoint(2, server.ifindex, server.host_interface, "10.95.0.2"),
            PinnedEndpoint(3, gone.ifindex, gone.host_interface, "10.95.0.3"),
        ]
        first.close()

        current = second = NodeDatapath(config)
        # the new agent re-registers the pods that still exist; pod 3 went while it was down
        second.upsert_endpoint(EndpointSpec(1, client.host_interface, CLIENT_ID, client.ipv4))
        second.upsert_endpoint(EndpointSpec(2, server.host_interface, SERVER_ID, server.ipv4))
        assert [p.endpoint_id for p in second.pinned_endpoints()] == [1, 2, 3]
        removed = second.remove_unregistered_endpoints()
        assert removed == [PinnedEndpoint(3, gone.ifindex, gone.host_interface, "10.95.0.3")]
        assert [p.endpoint_id for p in second.pinned_endpoints()] == [1, 2]
        assert not any(k.endpoint_id == 3 for k in second.policy_map.keys())
        assert not (second.pin_dir / "links" / "ep3-ingress").exists()
        assert not (second.pin_dir / "links" / "ep3-egress").exists()
        # the re-registered pods keep their pinned policy: 2 still admits only port 80 from 43
        listening = TcpServer(server.name, server.ipv4, 8080)
        try:
            assert not tcp_connect(client.name, server.ipv4, 8080, timeout_s=0.5)
        finally:
            listening.close()
        assert second.remove_unregistered_endpoints() == []
        # pod 3's interface is free of programs: traffic to it is no longer decided
        listening = TcpServer(gone.name, gone.ipv4, 8080)
        try:
            assert tcp_connect(client.name, gone.ipv4, 8080)
        finally:
            listening.close()
    finally:
        current.teardown()
