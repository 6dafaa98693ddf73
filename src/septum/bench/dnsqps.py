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

from typing import Any

from septum.bench import nsprocs, proxynode
from septum.dataplane.datapath import EndpointSpec

CLIENT_ID, SERVER_ID = 3201, 3203
CLIENT_IP = "10.94.0.1"
SERVER_IP = "192.0.2.53"
PROXY_PORT = 15053
UDP = 17


_PROCS = "septum.bench.dnsprocs"


def _load(ns: str, seconds: float, clients: int) -> dict[str, Any]:
    args = [SERVER_IP, "53", "--seconds", str(seconds), "--clients", str(clients)]
    return nsprocs.run_json(ns, _PROCS, "load", *args, timeout_s=seconds + 60)


def measure(seconds: float = 3.0, clients: int = 16) -> dict[str, Any]:
    """`dns_qps_direct` and `dns_qps_proxied` (answers/s) measured in the same run."""
    with proxynode.proxy_node("bdq") as (sandbox, node):
        client = sandbox.add_pod("c", CLIENT_IP)
        sandbox.add_outside("dns", f"{sandbox.prefix}up", "192.0.2.1", [SERVER_IP])
        node.upsert_endpoint(EndpointSpec(1, client.host_interface, CLIENT_ID, CLIENT_IP))
        node.upsert_prefixes({f"{CLIENT_IP}/32": CLIENT_ID, f"{SERVER_IP}/32": SERVER_ID})
        client_ns = f"{sandbox.prefix}-c"
        processes = [
            nsprocs.start(f"{sandbox.prefix}-dns", _PROCS, "server", SERVER_IP, "53"),
            nsprocs.start(sandbox.node_ns, _PROCS, "proxy", str(PROXY_PORT), str(CLIENT_ID)),
        ]
        try:
            proxynode.client_egress(node, 1, SERVER_ID, UDP, 53, 0)
            direct = _load(client_ns, seconds, clients)
            proxynode.client_egress(node, 1, SERVER_ID, UDP, 53, PROXY_PORT)
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
