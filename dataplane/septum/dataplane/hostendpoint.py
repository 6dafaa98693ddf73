"""The node's host endpoint (Cilium's host firewall): the node's own interfaces, decided by
one policy.

The host endpoint is an endpoint like a pod's -- one identity, one policy in the policy
maps, one ``sep_endpoints`` value -- except that it lives on several interfaces: the same
value is written under each interface's index, so every interface shares the policy keys
and the generation switch of ``replace_policy`` flips them all.  Its programs
(``septum_from_netdev`` / ``septum_to_netdev``) decide only packets addressed to, or sent
by, an address the ipcache maps to the ``host`` identity; forwarded pod traffic passes
untouched (it is decided at the pods' veths).

A restarted agent takes the host endpoint over as it does a pod: the pinned entry (same
endpoint id on the first interface) keeps enforcing, and the pinned links get the new
programs swapped in, until the first ``set``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

from septum.dataplane import abi
from septum.dataplane.addressing import check_identity
from septum.dataplane.attach import Attachment
from septum.dataplane.conntrack import Conntrack
from septum.dataplane.endpointentry import (
    EndpointSpec,
    EndpointState,
    adopted_state,
    endpoint_entry,
    next_revision,
)
from septum.dataplane.errors import EndpointError
from septum.dataplane.hooks import NodeHooks
from septum.dataplane.maps import BpfMap
from septum.dataplane.policy import EncodedPolicy, EndpointPolicy, PolicyDiff
from septum.dataplane.policymap import PolicyMaps

# The host endpoint's id in the policy keys and events: pods are 1..0xFFFF (validated), so 0
# never collides with one.
HOST_ENDPOINT_ID: Final = 0


@dataclass(frozen=True)
class HostEndpointInfo:
    """What the node's host endpoint is now."""

    interfaces: tuple[str, ...]
    identity: int
    policy: EndpointPolicy
    audit: bool


@dataclass
class _Interface:
    name: str
    ifindex: int
    attachments: list[Attachment] = field(default_factory=list)


class HostEndpoint:
    """The node's one host endpoint: its interfaces, entry, policy and programs."""

    def __init__(
        self,
        table: BpfMap[abi.EndpointKey, abi.Endpoint],
        hooks: NodeHooks,
        policies: PolicyMaps,
        conntrack: Conntrack,
    ) -> None:
        self._table = table
        self._hooks = hooks
        self._policies = policies
        self._conntrack = conntrack
        self._state: EndpointState | None = None
        self._interfaces: dict[str, _Interface] = {}

    def info(self) -> HostEndpointInfo | None:
        if self._state is None:
            return None
        return HostEndpointInfo(
            tuple(self._interfaces),
            self._state.spec.identity,
            self._state.policy,
            self._state.audit,
        )

    def encoded(self) -> list[EncodedPolicy]:
        """The host endpoint's policy as it is in the policy maps (for room checks)."""
        return [] if self._state is None else [self._state.encoded]

    def ifindexes(self) -> set[int]:
        return {i.ifindex for i in self._interfaces.values()}

    def set(
        self,
        interfaces: Sequence[str],
        identity: int,
        policy: EndpointPolicy,
        live_policies: Iterable[EncodedPolicy],
    ) -> PolicyDiff:
        """Make `interfaces` the host endpoint's, with `identity` and `policy`; returns
        what changed in the policy.  Interfaces no longer named are released (programs
        detached, entry and conntrack entries removed)."""
        check_identity("identity", identity, EndpointError)
        if isinstance(interfaces, str) or not interfaces:
            raise EndpointError("interfaces: name at least one of the node's interfaces")
        wanted = {name: self._hooks.ifindex(name) for name in interfaces}
        for name in [n for n in self._interfaces if n not in wanted]:
            self._release(self._interfaces.pop(name))
        first = wanted[interfaces[0]]
        # map entry only: the programs are attached per interface below
        spec = EndpointSpec(HOST_ENDPOINT_ID, first, identity, check_source=False, attach=False)
        if self._state is None:
            self._state = self._initial_state(spec, first)
        else:
            self._state.spec = spec
            self._state.ifindex = first
        for name, ifindex in wanted.items():
            current = self._interfaces.get(name)
            if current is not None and current.ifindex != ifindex:  # the interface was re-made
                self._release(self._interfaces.pop(name))
            self._interfaces.setdefault(name, _Interface(name, ifindex))
        change = self._policies.replace(self._state, policy, live_policies, self._publish)
        # identity and new interfaces need the entry even when the policy did not change
        self._publish(self._state)
        for interface in self._interfaces.values():
            if not interface.attachments:
                self._hooks.attach_host(interface.name, interface.ifindex, interface.attachments)
        return change

    def _initial_state(self, spec: EndpointSpec, ifindex: int) -> EndpointState:
        pinned = self._table.lookup(abi.EndpointKey(ifindex=ifindex))
        if pinned is not None and pinned.endpoint_id == HOST_ENDPOINT_ID:
            # an earlier agent's host endpoint: it keeps enforcing until replaced
            return adopted_state(spec, ifindex, pinned)
        self._policies.purge(HOST_ENDPOINT_ID)  # anything an interrupted agent left
        return EndpointState(spec, ifindex)

    def _publish(self, state: EndpointState) -> None:
        value = endpoint_entry(state)
        for interface in self._interfaces.values():
            self._table.update(abi.EndpointKey(ifindex=interface.ifindex), value)

    def set_audit(self, enabled: bool) -> None:
        """Audit mode: the host's would-be drops pass with verdict AUDIT."""
        state = self._require()
        state.audit = enabled
        state.revision = next_revision(state.revision)
        self._publish(state)

    def remove(self) -> None:
        """Detach from every interface, delete the entries, the policy and the host's
        conntrack entries: the node's traffic is no longer looked at."""
        if self._state is None:
            return
        for interface in list(self._interfaces.values()):
            self._release(interface)
        self._interfaces.clear()
        self._policies.purge(HOST_ENDPOINT_ID)
        self._state = None

    def _release(self, interface: _Interface) -> None:
        self._hooks.detach_all(interface.attachments)
        self._table.delete(abi.EndpointKey(ifindex=interface.ifindex))
        self._conntrack.flush(interface.ifindex)

    def _require(self) -> EndpointState:
        if self._state is None:
            raise EndpointError("host endpoint: none on this node (set_host_endpoint first)")
        return self._state
