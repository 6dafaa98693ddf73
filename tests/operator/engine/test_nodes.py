"""Nodes in the ipcache: their addresses map to host (the engine's own node) or remote-node."""

from __future__ import annotations

import ipaddress
from typing import Any

from septum.operator.engine.state import Engine
from septum.wellknown.reserved import ReservedIdentity

HOST = int(ReservedIdentity.HOST)
REMOTE = int(ReservedIdentity.REMOTE_NODE)


def node(name: str, *ips: str) -> dict[str, Any]:
    addresses = [{"type": "InternalIP", "address": ip} for ip in ips]
    return {"metadata": {"name": name}, "status": {"addresses": addresses}}


def net(ip: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(ip)


def test_a_new_node_upserts_its_addresses() -> None:
    engine = Engine(local_node="n1")
    changes = engine.upsert_node(node("n1", "192.168.0.1"))
    assert changes.ipcache_upserts[net("192.168.0.1")] == HOST
    changes = engine.upsert_node(node("n2", "192.168.0.2"))
    assert changes.ipcache_upserts[net("192.168.0.2")] == REMOTE
    assert not changes.ipcache_deletes


def test_a_changed_address_is_deleted_and_the_new_one_upserted() -> None:
    engine = Engine(local_node="n1")
    engine.upsert_node(node("n2", "192.168.0.2", "192.168.0.20"))
    changes = engine.upsert_node(node("n2", "192.168.0.3", "192.168.0.20"))
    assert changes.ipcache_deletes == {net("192.168.0.2")}
    assert changes.ipcache_upserts[net("192.168.0.3")] == REMOTE
    # a kept address is not deleted (flush drops a delete that is also upserted)
    assert net("192.168.0.20") not in changes.ipcache_deletes
    assert engine.ipcache()[net("192.168.0.3")] == REMOTE
    assert net("192.168.0.2") not in engine.ipcache()


def test_incremental_ipcache_equals_the_full_table() -> None:
    engine = Engine(local_node="n1")
    view = dict(engine.ipcache())
    for obj in (
        node("n1", "192.168.0.1"),
        node("n2", "192.168.0.2"),
        node("n1", "192.168.0.11", "fd00::1"),
        node("n2", "192.168.0.12"),
    ):
        changes = engine.upsert_node(obj)
        for network in changes.ipcache_deletes:
            view.pop(network, None)
        view.update(changes.ipcache_upserts)
        assert view == engine.ipcache()
    changes = engine.delete_node("n2")
    for network in changes.ipcache_deletes:
        view.pop(network, None)
    assert view == engine.ipcache()


def host_network_pod(phase: str = "Running") -> dict[str, Any]:
    return {
        "metadata": {"name": "centaur-1", "namespace": "forest", "labels": {"app": "centaur"}},
        "spec": {"hostNetwork": True, "nodeName": "n2", "containers": [{"name": "c"}]},
        "status": {"phase": phase, "podIP": "192.168.0.2", "podIPs": [{"ip": "192.168.0.2"}]},
    }


def test_a_host_network_pod_never_deletes_its_nodes_address() -> None:
    """A host-network pod's address is its node's: it has no ipcache entry of its own, so an
    update or a deletion of the pod must leave the node's (seen as `world` otherwise: the
    network-policy-api suite's node-peer tests, egress to host-network pods, were dropped)."""
    engine = Engine(local_node="n1")
    engine.upsert_node(node("n2", "192.168.0.2"))
    for changes in (
        engine.upsert_pod(host_network_pod("Pending")),
        engine.upsert_pod(host_network_pod()),
        engine.delete_pod("forest", "centaur-1"),
    ):
        assert net("192.168.0.2") not in changes.ipcache_deletes
    assert engine.ipcache()[net("192.168.0.2")] == REMOTE
