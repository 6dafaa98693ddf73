"""A node datapath in namespaces of its own with the L7 redirect's routing, for the proxy
benches (`septum bench l7`: HTTP and DNS): pods are added by the caller, everything is torn
down at the end, whatever happened."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager

from septum.dataplane import l7redirect
from septum.dataplane.abi import TrafficDirection
from septum.dataplane.config import DatapathConfig
from septum.dataplane.datapath import NodeDatapath
from septum.dataplane.policy import EndpointPolicy, PolicyEntry
from septum.dataplane.sandbox import Sandbox


@contextmanager
def proxy_node(kind: str) -> Iterator[tuple[Sandbox, NodeDatapath]]:
    """(sandbox, node) with names starting ``<kind><4 hex digits>``."""
    prefix = f"{kind}{secrets.token_hex(2)}"
    sandbox = Sandbox(prefix)
    node: NodeDatapath | None = None
    try:
        node = NodeDatapath(DatapathConfig(node_name=f"b-{prefix}", netns=sandbox.node_ns))
        l7redirect.install_proxy_routing(sandbox.node_ns)
        yield sandbox, node
    finally:
        if node is not None:
            node.teardown()
        sandbox.close()


def client_egress(
    node: NodeDatapath,
    endpoint_id: int,
    peer_identity: int,
    protocol: int,
    port: int,
    proxy_port: int,
) -> None:
    """The client's one egress entry: allowed at L3/L4 (`proxy_port` 0, direct) or redirected
    to the proxy on `proxy_port`; conntrack flushed, so no connection keeps the other way."""
    entry = PolicyEntry(
        TrafficDirection.EGRESS, peer_identity, protocol, port, rule_id=1, l7_proxy_port=proxy_port
    )
    node.replace_policy(endpoint_id, EndpointPolicy(enforce_egress=True, entries=(entry,)))
    node.flush_conntrack()


__all__ = ["client_egress", "proxy_node"]
