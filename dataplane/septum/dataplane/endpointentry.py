"""What an endpoint's ``sep_endpoints`` entry says, worked out without touching a map.

A caller describes a pod with an :class:`EndpointSpec`; this process keeps an
:class:`EndpointState` per pod (its policy, generation, revision, attachments); and
:func:`endpoint_entry` turns the state into the kernel's ``abi.Endpoint``.  The
endpoints module does the map writes.
"""

from __future__ import annotations

import ctypes
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from septum.dataplane import abi
from septum.dataplane.addressing import U32_MAX, check_identity
from septum.dataplane.attach import Attachment
from septum.dataplane.errors import EndpointError
from septum.dataplane.policy import EncodedPolicy, EndpointPolicy

ENDPOINT_ID_MAX: Final = 0xFFFF
# Endpoint flags that come from its policy (kept from an adopted pinned entry).
POLICY_FLAGS: Final = (
    abi.EP_F_ENFORCE_INGRESS
    | abi.EP_F_ENFORCE_EGRESS
    | abi.EP_F_ANY_PEER_INGRESS
    | abi.EP_F_ANY_PEER_EGRESS
)


@dataclass(frozen=True)
class EndpointSpec:
    """A pod on this node: its host-side veth, security identity and addresses."""

    endpoint_id: int
    interface: str | int  # host-side veth: name, or ifindex
    identity: int
    ipv4: str | None = None
    ipv6: str | None = None
    check_source: bool = True  # drop egress from addresses the pod does not own
    attach: bool = True  # attach the tc programs (False: map entry only, e.g. test runs)


@dataclass
class EndpointState:
    """What this process knows of one of its endpoints."""

    spec: EndpointSpec
    ifindex: int
    audit: bool = False
    generation: int = 0  # which of the two policy generations is live
    revision: int = 1  # bumped on every change that re-decides connections (never 0)
    policy: EndpointPolicy = field(default_factory=EndpointPolicy)
    encoded: EncodedPolicy = field(default_factory=EncodedPolicy)
    attachments: list[Attachment] = field(default_factory=list)
    # the pinned entry of an earlier agent, kept enforcing (its policy-derived flags and the
    # policy keys it points to) until this process replaces the endpoint's policy
    adopted: abi.Endpoint | None = None


def adopted_state(spec: EndpointSpec, ifindex: int, pinned: abi.Endpoint) -> EndpointState:
    """The state of a pod an earlier agent left pinned: its generation, revision and audit
    mode carry on, and its pinned policy keeps enforcing until it is replaced."""
    return EndpointState(
        spec,
        ifindex,
        audit=bool(pinned.flags & abi.EP_F_AUDIT),
        generation=pinned.policy_generation,
        revision=pinned.policy_revision,
        adopted=pinned,
    )


def next_revision(revision: int) -> int:
    """The revision after `revision`: a u32 that wraps past 0 (0 means "none")."""
    return (revision + 1) & U32_MAX or 1


def validate_spec(spec: EndpointSpec) -> None:
    """Raise EndpointError naming the first invalid field of `spec`."""
    if isinstance(spec.endpoint_id, bool) or not isinstance(spec.endpoint_id, int):
        raise EndpointError(f"endpoint_id: {spec.endpoint_id!r} is not an integer")
    if not 0 < spec.endpoint_id <= ENDPOINT_ID_MAX:
        raise EndpointError(f"endpoint_id: {spec.endpoint_id} out of range 1..{ENDPOINT_ID_MAX}")
    check_identity("identity", spec.identity, EndpointError)
    if spec.ipv4:
        packed_address("ipv4", spec.ipv4, 4)
    if spec.ipv6:
        packed_address("ipv6", spec.ipv6, 6)


def packed_address(field_name: str, value: str, version: int) -> bytes:
    """`value` in network byte order, which must be an IPv`version` address."""
    try:
        address = ipaddress.ip_address(value)
    except ValueError as err:
        raise EndpointError(f"{field_name}: {err}") from err
    if address.version != version:
        raise EndpointError(f"{field_name}: {value!r} is not an IPv{version} address")
    return address.packed


def _policy_flags(state: EndpointState) -> int:
    if state.adopted is not None:
        return int(state.adopted.flags) & POLICY_FLAGS
    flags = 0
    if state.policy.enforce_ingress:
        flags |= abi.EP_F_ENFORCE_INGRESS
    if state.policy.enforce_egress:
        flags |= abi.EP_F_ENFORCE_EGRESS
    any_peer_buckets = {key[0] for key in state.encoded.hash_entries if key[1] == 0}
    if abi.TrafficDirection.INGRESS in any_peer_buckets:
        flags |= abi.EP_F_ANY_PEER_INGRESS
    if abi.TrafficDirection.EGRESS in any_peer_buckets:
        flags |= abi.EP_F_ANY_PEER_EGRESS
    return flags


def exact_first_flags(hash_entries: Iterable[tuple[int, int, int, int]]) -> int:
    """SEPTUM_EP_POLICY_F_EXACT_FIRST_* for the directions whose policy has exact
    (peer, protocol, port) entries: there a new connection tries its exact key first."""
    flags = 0
    for direction, _peer, protocol, port in hash_entries:
        if protocol and port:
            flags |= (
                abi.EP_POLICY_F_EXACT_FIRST_INGRESS
                if direction == abi.TrafficDirection.INGRESS
                else abi.EP_POLICY_F_EXACT_FIRST_EGRESS
            )
    return flags


def endpoint_entry(state: EndpointState) -> abi.Endpoint:
    """The ``sep_endpoints`` value for `state` (its key is the interface index)."""
    spec = state.spec
    flags = _policy_flags(state)
    if state.audit:
        flags |= abi.EP_F_AUDIT
    if spec.check_source:
        flags |= abi.EP_F_CHECK_SOURCE
    value = abi.Endpoint(
        identity=spec.identity,
        policy_revision=state.revision,
        endpoint_id=spec.endpoint_id,
        policy_generation=state.generation,
    )
    if spec.ipv4:
        flags |= abi.EP_F_HAS_IPV4
        value.ipv4 = (ctypes.c_uint8 * 4)(*packed_address("ipv4", spec.ipv4, 4))
    if spec.ipv6:
        flags |= abi.EP_F_HAS_IPV6
        value.ipv6 = (ctypes.c_uint8 * 16)(*packed_address("ipv6", spec.ipv6, 6))
    value.flags = flags
    value.policy_flags = (
        state.adopted.policy_flags
        if state.adopted is not None
        else exact_first_flags(state.encoded.hash_entries)
    )
    return value
