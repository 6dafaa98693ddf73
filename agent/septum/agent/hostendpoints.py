"""The node's host endpoint (Cilium's host firewall), realized on the node's own interfaces.

The engine computes one host endpoint per node (`HostKey(node)`: clusterwide Septum
policies with a `nodeSelector`).  This module puts this node's on its interfaces:

- the host programs are attached at start-up, before the agent opens any connection of its
  own, with an unenforced policy: nothing is decided, but conntrack learns the node's
  connections, so a host policy that arrives later does not cut the ones already open
  (the agent's own watches, the kubelet's);
- the interfaces' addresses are written to the ipcache as `host` at once (the datapath
  decides only packets addressed to, or sent from, an address mapped to `host`);
- after every reconcile the host endpoint's compiled policy is translated by the adapter
  and written when it changed; a node no host policy selects stays unenforced;
- `audit`: the host's would-be drops pass with verdict AUDIT (try a host policy out first).

Only this module knows the host firewall: the engine side is read through the compiler,
the translation is the adapter's.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from septum.agent import adapter
from septum.agent.compiler import Compiler
from septum.dataplane import NodeDatapath
from septum.dataplane.abi import IDENTITY_HOST
from septum.dataplane.hostendpoint import HOST_ENDPOINT_ID
from septum.dataplane.policy import EndpointPolicy, diff_policy

log = logging.getLogger(__name__)

# resolved, as the adapter's policies are: the first compiled policy is then no change
UNENFORCED: Final = EndpointPolicy(resolved=True)


@dataclass(frozen=True)
class NodeInterface:
    name: str
    addresses: tuple[str, ...]  # global addresses, without prefix length


def node_interfaces() -> list[NodeInterface]:
    """The interfaces of this network namespace that carry the node's addresses: a global
    address on a shared subnet (prefix shorter than a host route).  Pod veths carry only
    host routes and their gateway as a /32 (or none), loopback and address-less bridges
    none, so they are left out."""
    out = subprocess.run(
        ["ip", "-j", "addr", "show"], capture_output=True, text=True, check=True, timeout=10
    )
    found: list[NodeInterface] = []
    for link in json.loads(out.stdout or "[]"):
        addresses = tuple(
            str(info["local"])
            for info in link.get("addr_info") or []
            if info.get("scope") == "global"
            and info.get("local")
            and int(info.get("prefixlen", 0))
            < ipaddress.ip_address(str(info["local"])).max_prefixlen
        )
        if addresses:
            found.append(NodeInterface(str(link["ifname"]), addresses))
    return found


def host_prefixes(interfaces: Sequence[NodeInterface]) -> dict[str, int]:
    """The ipcache entries that make the interfaces' addresses the host's."""
    return {
        f"{address}/{ipaddress.ip_address(address).max_prefixlen}": int(IDENTITY_HOST)
        for interface in interfaces
        for address in interface.addresses
    }


class HostFirewall:
    """This node's host endpoint: attached at start, its policy written as it changes."""

    def __init__(
        self, datapath: NodeDatapath, interfaces: Sequence[NodeInterface], audit: bool = False
    ) -> None:
        if not interfaces:
            raise ValueError("host firewall: no interface carries the node's addresses")
        self.datapath = datapath
        self.interfaces = tuple(interfaces)
        self.audit = audit
        self.written: EndpointPolicy | None = None
        self._audit_written: bool | None = None

    @property
    def names(self) -> list[str]:
        return [i.name for i in self.interfaces]

    def start(self) -> None:
        """Map the node's addresses to `host` and attach the host programs, unenforced.
        An earlier agent's pinned host endpoint is left enforcing (its links stay attached)
        until the first realize() adopts and replaces it, as a restart does for pods."""
        self.datapath.upsert_prefixes(host_prefixes(self.interfaces))
        adopting = pinned_host_endpoint(self.datapath)
        if not adopting:
            self._write(UNENFORCED)
        log.info(
            "host firewall attached",
            extra={"fields": {"interfaces": self.names, "audit": self.audit, "adopted": adopting}},
        )

    def _write(self, desired: EndpointPolicy) -> None:
        self.datapath.set_host_endpoint(self.names, IDENTITY_HOST, desired)
        self.written = desired
        if self._audit_written != self.audit:
            self.datapath.set_host_audit(self.audit)
            self._audit_written = self.audit

    def realize(self, compiler: Compiler) -> bool:
        """Write the host endpoint's compiled policy if it changed; True when written."""
        desired = self.desired(compiler)
        if self.written is not None and diff_policy(self.written, desired).empty:
            return False
        self._write(desired)
        log.info(
            "host policy written",
            extra={
                "fields": {
                    "interfaces": self.names,
                    "ingressEnforced": desired.enforce_ingress,
                    "egressEnforced": desired.enforce_egress,
                    "entries": len(desired.entries),
                }
            },
        )
        return True

    def desired(self, compiler: Compiler) -> EndpointPolicy:
        """The host endpoint's policy for this node (unenforced while no host policy
        selects it, or while the engine does not know the node yet)."""
        engine = compiler.engine
        key = next((k for k in engine.host_endpoints() if k.node == compiler.node), None)
        if key is None:
            return UNENFORCED
        return adapter.endpoint_policy(engine.endpoint_policy(key))


def pinned_host_endpoint(datapath: NodeDatapath) -> bool:
    """Whether an earlier agent left a host endpoint in the node's pinned maps."""
    return any(v.endpoint_id == HOST_ENDPOINT_ID for _, v in datapath.endpoints_map.items())


def release_leftovers(datapath: NodeDatapath, interfaces: Sequence[NodeInterface]) -> bool:
    """With the host firewall disabled: remove a host endpoint an earlier agent left (its
    programs would keep deciding the node's traffic with nobody updating its policy).
    Taking it over first finds its pinned links; True when one was removed."""
    if not pinned_host_endpoint(datapath) or not interfaces:
        return False
    datapath.set_host_endpoint([i.name for i in interfaces], IDENTITY_HOST, UNENFORCED)
    datapath.remove_host_endpoint()
    log.info("host firewall disabled: the host endpoint an earlier agent left is removed")
    return True
