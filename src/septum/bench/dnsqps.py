"""DNS queries per second through the DNS proxy against direct, in the same run (the DNS
part of `septum bench l7`, issue 14's `dns_qps_proxied`).

A client pod (a namespace) on a node datapath with the real redirect asks a DNS server on a
documentation address behind the node's uplink (192.0.2.53). Direct: the pod's egress
entry allows UDP/53 at L3/L4. Proxied: the same entry carries the L7 proxy port, so every
query goes through the DNS proxy (septum.agent.l7, rules.dns `*.example.com`, on uvloop,
one process: one core at most), which parses it, checks the rule, forwards it with the
pod's identity, parses the answer and records the learned address. Closed loop: a number
of client sockets, each with one query outstanding. Server, proxy and load generator are
each their own process."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from septum.bench import nsprocs
from septum.dataplane import l7redirect
from septum.dataplane.abi import TrafficDirection
from septum.dataplane.config import DatapathConfig
from septum.dataplane.datapath import EndpointSpec, NodeDatapath
from septum.dataplane.policy import EndpointPolicy, PolicyEntry
from septum.dataplane.sandbox import Sandbox

CLIENT_ID, SERVER_ID = 3201, 3203
CLIENT_IP = "10.94.0.1"
SERVER_IP = "192.0.2.53"
PROXY_PORT = 15053
UDP = 17


_PROCS = "septum.bench.dnsprocs"


def _load(ns: str, seconds: float, clients: int) -> dict[str, Any]:
    args = [SERVER_IP, "53", "--seconds", str(seconds), "--clients", str(clients)]
    return nsprocs.run_json(ns, _PROCS, "load", *args, timeout_s=seconds + 60)


@contextmanager
def _world() -> Iterator[tuple[Sandbox, NodeDatapath]]:
    prefix = f"bdq{secrets.token_hex(2)}"
    sandbox = Sandbox(prefix)
    node: NodeDatapath | None = None
    try:
        node = NodeDatapath(DatapathConfig(node_name=f"b-{prefix}", netns=sandbox.node_ns))
        client = sandbox.add_pod("c", CLIENT_IP)
        sandbox.add_outside("dns", f"{prefix}up", "192.0.2.1", [SERVER_IP])
        node.upsert_endpoint(EndpointSpec(1, client.host_interface, CLIENT_ID, CLIENT_IP))
        node.upsert_prefixes({f"{CLIENT_IP}/32": CLIENT_ID, f"{SERVER_IP}/32": SERVER_ID})
        l7redirect.install_proxy_routing(sandbox.node_ns)
        yield sandbox, node
    finally:
        if node is not None:
            node.teardown()
        sandbox.close()


def _client_policy(node: NodeDatapath, proxy_port: int) -> None:
    entry = PolicyEntry(
        TrafficDirection.EGRESS, SERVER_ID, UDP, 53, rule_id=1, l7_proxy_port=proxy_port
    )
    node.replace_policy(1, EndpointPolicy(enforce_egress=True, entries=(entry,)))
    node.flush_conntrack()


def measure(seconds: float = 3.0, clients: int = 16) -> dict[str, Any]:
    """`dns_qps_direct` and `dns_qps_proxied` (answers/s) measured in the same run."""
    with _world() as (sandbox, node):
        client_ns = f"{sandbox.prefix}-c"
        processes = [
            nsprocs.start(f"{sandbox.prefix}-dns", _PROCS, "server", SERVER_IP, "53"),
            nsprocs.start(sandbox.node_ns, _PROCS, "proxy", str(PROXY_PORT), str(CLIENT_ID)),
        ]
        try:
            _client_policy(node, 0)
            direct = _load(client_ns, seconds, clients)
            _client_policy(node, PROXY_PORT)
            proxied = _load(client_ns, seconds, clients)
        finally:
            for process in processes:
                nsprocs.stop(process)
    return {
        "dns_qps_direct": round(direct["answers"] / direct["seconds"]),
        "dns_qps_proxied": round(proxied["answers"] / proxied["seconds"]),
        "dns_timeouts": {"direct": direct["timeouts"], "proxied": proxied["timeouts"]},
        "dns_clients": clients,
    }


__all__ = ["measure"]
