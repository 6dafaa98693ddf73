"""The node's endpoints (pods): their ``sep_endpoints`` entries, their tc hooks, and the
adoption of pods an earlier agent of this node left pinned.

Adoption is what makes an agent restart safe: a pod found in the pinned map with the same
endpoint id on the same interface keeps its pinned entry and policy keys enforcing (and
its pinned links attached) until the new agent replaces its policy.  A restart never
opens a pod.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from septum.dataplane import abi
from septum.dataplane.conntrack import Conntrack
from septum.dataplane.endpointentry import (
    EndpointSpec,
    EndpointState,
    adopted_state,
    endpoint_entry,
    next_revision,
    validate_spec,
)
from septum.dataplane.errors import EndpointError
from septum.dataplane.hooks import NodeHooks
from septum.dataplane.localaddrs import LocalAddresses
from septum.dataplane.maps import BpfMap
from septum.dataplane.policy import EncodedPolicy
from septum.dataplane.policymap import PolicyMaps

# The host endpoint's entries (hostendpoint.py) carry this id; pods are 1..ENDPOINT_ID_MAX.
_HOST_ENDPOINT_ID = 0


@dataclass(frozen=True)
class PinnedEndpoint:
    """A pod entry found in the pinned ``sep_endpoints`` map (possibly an earlier agent's)."""

    endpoint_id: int
    ifindex: int
    interface: str | None  # its name on the node; None when the interface is gone
    ipv4: str | None = None  # the pod's addresses the entry holds
    ipv6: str | None = None


def entry_addresses(entry: abi.Endpoint) -> tuple[str | None, str | None]:
    """(ipv4, ipv6) of a ``sep_endpoints`` value, None where its flags say it has none."""
    ipv4 = (
        str(ipaddress.IPv4Address(bytes(entry.ipv4))) if entry.flags & abi.EP_F_HAS_IPV4 else None
    )
    ipv6 = (
        str(ipaddress.IPv6Address(bytes(entry.ipv6))) if entry.flags & abi.EP_F_HAS_IPV6 else None
    )
    return ipv4, ipv6


class Endpoints:
    """This process's endpoints by id, kept in step with ``sep_endpoints``."""

    def __init__(
        self,
        table: BpfMap[abi.EndpointKey, abi.Endpoint],
        hooks: NodeHooks,
        policies: PolicyMaps,
        conntrack: Conntrack,
        node_name: str,
        local_addresses: LocalAddresses,
    ) -> None:
        self.table = table
        self._local = local_addresses
        self._hooks = hooks
        self._policies = policies
        self._conntrack = conntrack
        self._node_name = node_name
        self._states: dict[int, EndpointState] = {}

    def ids(self) -> list[int]:
        return sorted(self._states)

    def state(self, endpoint_id: int) -> EndpointState:
        try:
            return self._states[endpoint_id]
        except KeyError:
            raise EndpointError(
                f"endpoint {endpoint_id} is not on node {self._node_name}"
            ) from None

    def encoded_policies(self) -> list[EncodedPolicy]:
        """Every endpoint's policy as it is in the policy maps."""
        return [state.encoded for state in self._states.values()]

    def publish(self, state: EndpointState) -> None:
        """Write the endpoint's entry: what packets of the pod are decided by from now on."""
        self.table.update(abi.EndpointKey(ifindex=state.ifindex), endpoint_entry(state))
        spec = state.spec
        self._local.publish(state.ifindex, [a for a in (spec.ipv4, spec.ipv6) if a])

    def upsert(self, spec: EndpointSpec) -> None:
        """Add or update a pod and attach the tc programs to its host-side veth.  A new pod
        whose programs cannot be attached is not added (nothing of it stays in the maps)."""
        validate_spec(spec)
        ifindex = self._hooks.ifindex(spec.interface)
        for other in self._states.values():
            if other.ifindex == ifindex and other.spec.endpoint_id != spec.endpoint_id:
                raise EndpointError(
                    f"interface: {spec.interface!r} (ifindex {ifindex}) already belongs to "
                    f"endpoint {other.spec.endpoint_id}"
                )
        state = self._states.get(spec.endpoint_id)
        if state is None:
            self._add(spec, ifindex)
            return
        if state.ifindex != ifindex:
            # a new interface for the pod: nothing of the old one may linger
            self.table.delete(abi.EndpointKey(ifindex=state.ifindex))
            self._hooks.detach_all(state.attachments)
            self._conntrack.flush(state.ifindex)
            self._local.forget(state.ifindex)
        state.spec = spec
        state.ifindex = ifindex
        self.publish(state)
        if spec.attach and len(state.attachments) < 2:
            self._hooks.attach_pod(spec.endpoint_id, ifindex, state.attachments)

    def _add(self, spec: EndpointSpec, ifindex: int) -> None:
        key = abi.EndpointKey(ifindex=ifindex)
        pinned = self.table.lookup(key)
        if pinned is not None and pinned.endpoint_id == spec.endpoint_id:
            state = adopted_state(spec, ifindex, pinned)
        else:
            if pinned is not None:  # another pod's leftover on this interface
                self._policies.purge(pinned.endpoint_id)
            self._policies.purge(spec.endpoint_id)
            state = EndpointState(spec, ifindex)
        self.publish(state)
        if spec.attach:
            try:
                # an adopted pod's pinned links enforce until replaced: never detach them
                self._hooks.attach_pod(
                    spec.endpoint_id,
                    ifindex,
                    state.attachments,
                    detach_on_failure=state.adopted is None,
                )
            except Exception:
                if state.adopted is not None:
                    self.table.update(key, state.adopted)
                else:
                    self.table.delete(key)
                raise
        self._states[spec.endpoint_id] = state

    def remove(self, endpoint_id: int) -> None:
        """Detach, forget the pod's map entry, its policy and its conntrack entries."""
        state = self.state(endpoint_id)
        self._hooks.detach_all(state.attachments)
        self.table.delete(abi.EndpointKey(ifindex=state.ifindex))
        self._policies.purge(endpoint_id)
        self._conntrack.flush(state.ifindex)
        self._local.forget(state.ifindex)
        del self._states[endpoint_id]

    def revision(self, endpoint_id: int) -> int:
        """The policy revision the endpoint's pinned entry holds (what packets are decided
        by); 0 when the entry is missing."""
        entry = self.table.lookup(abi.EndpointKey(ifindex=self.state(endpoint_id).ifindex))
        if entry is None or entry.endpoint_id != endpoint_id:
            return 0
        return int(entry.policy_revision)

    def pinned(self) -> list[tuple[int, int, str | None, str | None]]:
        """(endpoint id, ifindex, ipv4, ipv6) of every pod entry in the map, this process's
        or not."""
        return sorted(
            (int(value.endpoint_id), int(key.ifindex), *entry_addresses(value))
            for key, value in self.table.items()
            if value.endpoint_id != _HOST_ENDPOINT_ID
        )

    def registered(self, endpoint_id: int, ifindex: int) -> bool:
        """Whether this process holds the endpoint on that interface."""
        state = self._states.get(endpoint_id)
        return state is not None and state.ifindex == ifindex

    def remove_pinned(self, endpoint_id: int, ifindex: int) -> None:
        """Remove a pod entry this process did not register (an earlier agent's pod that is
        gone): the entry, its links, its policy keys and conntrack entries -- each only where
        no registered endpoint uses the same id or interface."""
        if self.registered(endpoint_id, ifindex):
            raise EndpointError(f"endpoint {endpoint_id} is registered: use remove()")
        key = abi.EndpointKey(ifindex=ifindex)
        entry = self.table.lookup(key)
        if entry is not None and entry.endpoint_id == endpoint_id:
            self.table.delete(key)
        if endpoint_id not in self._states:
            self._hooks.detach_pod_links(endpoint_id)
            self._policies.purge(endpoint_id)
        if all(state.ifindex != ifindex for state in self._states.values()):
            self._conntrack.flush(ifindex)
            self._local.forget(ifindex)

    def set_audit(self, endpoint_id: int, enabled: bool) -> None:
        """Audit mode: would-be drops of the endpoint pass with verdict AUDIT."""
        state = self.state(endpoint_id)
        state.audit = enabled
        # a new revision: in revocation mode, audited connections are decided again
        state.revision = next_revision(state.revision)
        self.publish(state)
