"""NodeDatapath: the public, typed API over one node's datapath.

One NodeDatapath owns the loaded object, the node's pinned maps and the programs attached
to the node's interfaces.  Later parts of Septum (the agent/operator, the lab, the flow
server) build on this API only.
"""

from __future__ import annotations

import ctypes
import errno
import ipaddress
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute
from septum.dataplane import abi, attach, loader, netns
from septum.dataplane.attach import Attachment, XdpMode
from septum.dataplane.config import DatapathConfig
from septum.dataplane.errors import AttachError, EndpointError, LibbpfError, MapFullError
from septum.dataplane.events import Flow, decode_events
from septum.dataplane.kernelhz import kernel_hz
from septum.dataplane.libbpf import BpfMapBatchOpts, check, lib
from septum.dataplane.maps import BpfMap
from septum.dataplane.policy import EncodedPolicy, EndpointPolicy, PolicyDiff, diff_policy, encode
from septum.dataplane.ringbuf import RingBufferReader
from septum.dataplane.testrun import TestRunResult, test_run

# a minimal frame for BPF_PROG_TEST_RUN of septum_jiffies (tc needs an Ethernet header)
_CLOCK_PACKET_BYTES = 64

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


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


@dataclass(frozen=True)
class CounterKey:
    direction: abi.TrafficDirection
    verdict: abi.Verdict
    drop_reason: int


@dataclass(frozen=True)
class CounterValue:
    packets: int
    bytes: int


@dataclass
class _EndpointState:
    spec: EndpointSpec
    ifindex: int
    audit: bool
    generation: int
    revision: int
    policy: EndpointPolicy
    encoded: EncodedPolicy
    attachments: list[Attachment]
    # the pinned entry of an earlier agent, kept enforcing (its policy-derived flags and the
    # policy keys it points to) until this process replaces the endpoint's policy
    adopted: abi.Endpoint | None = None


def _host_key(network: IPNetwork) -> abi.HostKey:
    family = abi.IPVersion.V4 if network.version == 4 else abi.IPVersion.V6
    raw = network.network_address.packed.ljust(16, b"\0")
    return abi.HostKey(family=family, addr=(ctypes.c_uint8 * 16)(*raw))


def _lpm_key(network: IPNetwork) -> abi.LpmAddrKey:
    family = abi.IPVersion.V4 if network.version == 4 else abi.IPVersion.V6
    raw = network.network_address.packed.ljust(16, b"\0")
    return abi.LpmAddrKey(
        prefixlen=abi.LPM_ADDR_PREFIX_FIXED + network.prefixlen,
        family=family,
        addr=(ctypes.c_uint8 * 16)(*raw),
    )


def _network(cidr: str) -> IPNetwork:
    try:
        return ipaddress.ip_network(cidr, strict=False)
    except ValueError as err:
        raise ValueError(f"prefix {cidr!r}: {err}") from err


def _is_host(network: IPNetwork) -> bool:
    return network.prefixlen == network.max_prefixlen


_U32_MAX = 0xFFFFFFFF
# endpoint flags that come from its policy (kept from an adopted pinned entry)
_POLICY_FLAGS = (
    abi.EP_F_ENFORCE_INGRESS
    | abi.EP_F_ENFORCE_EGRESS
    | abi.EP_F_ANY_PEER_INGRESS
    | abi.EP_F_ANY_PEER_EGRESS
)


def _next_revision(revision: int) -> int:
    return (revision + 1) & _U32_MAX or 1


def _check_identity(where: str, identity: int) -> None:
    # 0 is no identity at all (the datapath reads it as "not looked up yet")
    if not isinstance(identity, int) or not 0 < identity <= _U32_MAX:
        raise ValueError(f"{where}: {identity!r} is not a security identity (1..{_U32_MAX})")


def _address(field: str, value: str, version: int) -> bytes:
    try:
        address = ipaddress.ip_address(value)
    except ValueError as err:
        raise EndpointError(f"{field}: {err}") from err
    if address.version != version:
        raise EndpointError(f"{field}: {value!r} is not an IPv{version} address")
    return address.packed


class NodeDatapath:
    """The datapath of one node.  Use as a context manager, or call close()/teardown()."""

    def __init__(self, config: DatapathConfig) -> None:
        self.config = config
        self._object = loader.load(config)
        self._endpoints: dict[int, _EndpointState] = {}
        self._uplinks: dict[str, Attachment] = {}
        self._cidrs: dict[bytes, abi.IpcacheValue] | None = None  # see _cidr_contents
        self._reader: RingBufferReader | None = None
        maps = self._object.maps

        def typed(name: str, key: Any, value: Any) -> BpfMap[Any, Any]:
            loaded = maps[name]
            return BpfMap(name, loaded.fd, key, value, loaded.capacity, loaded.setting)

        self.endpoints_map = typed(abi.MAP_ENDPOINTS, abi.EndpointKey, abi.Endpoint)
        self.ipcache_hosts = typed(abi.MAP_IPCACHE_HOST, abi.HostKey, abi.IpcacheValue)
        self.ipcache_cidrs = typed(abi.MAP_IPCACHE, abi.LpmAddrKey, abi.IpcacheValue)
        self.policy_map = typed(abi.MAP_POLICY, abi.PolicyKey, abi.PolicyValue)
        self.policy_ranges = typed(abi.MAP_POLICY_RANGES, abi.PolicyRangeKey, abi.PolicyValue)
        self.conntrack4_map = typed(abi.MAP_CONNTRACK4, abi.Ct4Key, abi.CtEntry)
        self.conntrack6_map = typed(abi.MAP_CONNTRACK6, abi.CtKey, abi.CtEntry)
        self.prefilter_map = typed(abi.MAP_PREFILTER, abi.LpmAddrKey, abi.PrefilterValue)
        self.config_map = typed(abi.MAP_CONFIG, ctypes.c_uint32, abi.Config)
        self._write_config()

    # ---- lifecycle ---------------------------------------------------------------------

    def __enter__(self) -> NodeDatapath:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Release this process's handles; pinned maps and attached programs stay."""
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        self._object.close()

    def teardown(self) -> None:
        """Detach everything this node's datapath attached, remove its pins, close.  Every
        step runs even when an earlier one fails (e.g. the node's namespace is already
        gone); the first error is raised at the end."""
        steps: list[Callable[[], object]] = [
            *(partial(self.remove_endpoint, e) for e in list(self._endpoints)),
            *(partial(self.detach_uplink, i) for i in list(self._uplinks)),
            self.close,
            partial(loader.remove_pins, self.config.pin_dir),
        ]
        first: BaseException | None = None
        for step in steps:
            try:
                step()
            except Exception as err:  # noqa: BLE001 - keep cleaning up, raise the first
                first = first or err
        if first is not None:
            raise first

    def _write_config(self) -> None:
        cfg = self.config
        flags = abi.CFG_F_REVOKE_ON_POLICY_CHANGE if cfg.revoke_on_policy_change else 0
        self.write_config(
            abi.Config(
                ct_timeout_tcp_syn_s=cfg.ct_timeout_tcp_syn_s,
                ct_timeout_tcp_established_s=cfg.ct_timeout_tcp_established_s,
                ct_timeout_tcp_close_s=cfg.ct_timeout_tcp_close_s,
                ct_timeout_other_s=cfg.ct_timeout_other_s,
                drop_event_interval_ms=cfg.drop_event_interval_ms,
                flags=flags,
            )
        )

    def write_config(self, value: abi.Config) -> None:
        """Replace the kernel-side node configuration (benchmarks toggle its flags); a zero
        `kernel_hz` is filled in with the running kernel's HZ."""
        if value.kernel_hz == 0:
            value.kernel_hz = kernel_hz()
        self.config_map.update(ctypes.c_uint32(0), value)

    def set_revoke_on_policy_change(self, enabled: bool) -> None:
        self.config = replace(self.config, revoke_on_policy_change=enabled)
        self._write_config()

    # ---- endpoints ---------------------------------------------------------------------

    def _ifindex(self, interface: str | int) -> int:
        if isinstance(interface, int):
            return interface
        with netns.entered(self.config.netns), IPRoute() as ipr:
            found = ipr.link_lookup(ifname=interface)
        if not found:
            raise EndpointError(
                f"interface {interface!r} not found on node {self.config.node_name}"
            )
        return int(found[0])

    def _endpoint_value(self, state: _EndpointState) -> abi.Endpoint:
        spec = state.spec
        flags = 0
        if state.adopted is not None:
            flags |= state.adopted.flags & _POLICY_FLAGS
        else:
            if state.policy.enforce_ingress:
                flags |= abi.EP_F_ENFORCE_INGRESS
            if state.policy.enforce_egress:
                flags |= abi.EP_F_ENFORCE_EGRESS
            any_peer_buckets = {key[0] for key in state.encoded.hash_entries if key[1] == 0}
            if abi.TrafficDirection.INGRESS in any_peer_buckets:
                flags |= abi.EP_F_ANY_PEER_INGRESS
            if abi.TrafficDirection.EGRESS in any_peer_buckets:
                flags |= abi.EP_F_ANY_PEER_EGRESS
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
            value.ipv4 = (ctypes.c_uint8 * 4)(*_address("ipv4", spec.ipv4, 4))
        if spec.ipv6:
            flags |= abi.EP_F_HAS_IPV6
            value.ipv6 = (ctypes.c_uint8 * 16)(*_address("ipv6", spec.ipv6, 6))
        value.flags = flags
        value.policy_flags = (
            state.adopted.policy_flags
            if state.adopted is not None
            else _exact_first_flags(state.encoded.hash_entries)
        )
        return value

    def _write_endpoint(self, state: _EndpointState) -> None:
        self.endpoints_map.update(
            abi.EndpointKey(ifindex=state.ifindex), self._endpoint_value(state)
        )

    def upsert_endpoint(self, spec: EndpointSpec) -> None:
        """Add or update a pod and attach the tc programs to its host-side veth.

        A pod an earlier agent of this node left in the pinned maps (same endpoint id on
        the same interface) keeps its pinned policy enforced until replace_policy: an agent
        restart never opens a pod.  A new pod whose programs cannot be attached is not
        added (nothing of it stays in the maps)."""
        if isinstance(spec.endpoint_id, bool) or not isinstance(spec.endpoint_id, int):
            raise EndpointError(f"endpoint_id: {spec.endpoint_id!r} is not an integer")
        if not 0 < spec.endpoint_id <= 0xFFFF:
            raise EndpointError(f"endpoint_id: {spec.endpoint_id} out of range 1..65535")
        try:
            _check_identity("identity", spec.identity)
        except ValueError as err:
            raise EndpointError(str(err)) from err
        if spec.ipv4:
            _address("ipv4", spec.ipv4, 4)
        if spec.ipv6:
            _address("ipv6", spec.ipv6, 6)
        ifindex = self._ifindex(spec.interface)
        for other in self._endpoints.values():
            if other.ifindex == ifindex and other.spec.endpoint_id != spec.endpoint_id:
                raise EndpointError(
                    f"interface: {spec.interface!r} (ifindex {ifindex}) already belongs to "
                    f"endpoint {other.spec.endpoint_id}"
                )
        state = self._endpoints.get(spec.endpoint_id)
        if state is None:
            self._add_endpoint(spec, ifindex)
            return
        if state.ifindex != ifindex:
            # a new interface for the pod: nothing of the old one may linger
            self.endpoints_map.delete(abi.EndpointKey(ifindex=state.ifindex))
            self._detach_all(state)
            self.flush_conntrack(spec.endpoint_id)
        state.spec = spec
        state.ifindex = ifindex
        self._write_endpoint(state)
        if spec.attach and len(state.attachments) < 2:
            self._attach_endpoint(state)

    def _add_endpoint(self, spec: EndpointSpec, ifindex: int) -> None:
        key = abi.EndpointKey(ifindex=ifindex)
        pinned = self.endpoints_map.lookup(key)
        if pinned is not None and pinned.endpoint_id == spec.endpoint_id:
            state = _EndpointState(
                spec,
                ifindex,
                bool(pinned.flags & abi.EP_F_AUDIT),
                pinned.policy_generation,
                pinned.policy_revision,
                EndpointPolicy(),
                EncodedPolicy(),
                [],
                adopted=pinned,
            )
        else:
            if pinned is not None:  # another pod's leftover on this interface
                self._purge_policy_keys(pinned.endpoint_id)
            self._purge_policy_keys(spec.endpoint_id)
            state = _EndpointState(
                spec, ifindex, False, 0, 1, EndpointPolicy(), EncodedPolicy(), []
            )
        self._write_endpoint(state)
        if spec.attach:
            try:
                # an adopted pod's pinned links enforce until replaced: never detach them
                self._attach_endpoint(state, detach_on_failure=state.adopted is None)
            except Exception:
                if state.adopted is not None:
                    self.endpoints_map.update(key, state.adopted)
                else:
                    self.endpoints_map.delete(key)
                raise
        self._endpoints[spec.endpoint_id] = state

    def _attach_endpoint(self, state: _EndpointState, detach_on_failure: bool = True) -> None:
        """Attach both hooks, or (when one fails) neither -- unless told to leave what is
        attached (an adopted pod: its taken-over links are the previous agent's, and
        unlinking their pins would leave the hook with no program at all)."""
        programs = self._object.programs
        links = self.config.pin_dir / "links"
        self._detach_all(state)
        try:
            with netns.entered(self.config.netns):
                for hook, program in (
                    ("ingress", abi.PROG_FROM_POD),
                    ("egress", abi.PROG_TO_POD),
                ):
                    pin = links / f"ep{state.spec.endpoint_id}-{hook}"
                    state.attachments.append(
                        attach.attach_tc(programs[program], state.ifindex, hook, pin)  # type: ignore[arg-type]
                    )
        except Exception:
            if detach_on_failure:
                self._detach_all(state)
            raise

    def _detach_all(self, state: _EndpointState) -> None:
        with netns.entered(self.config.netns):
            for attachment in state.attachments:
                attach.detach(attachment)
        state.attachments.clear()

    def remove_endpoint(self, endpoint_id: int) -> None:
        """Detach, forget the pod's map entry, its policy and its conntrack entries."""
        state = self._state(endpoint_id)
        self._detach_all(state)
        self.endpoints_map.delete(abi.EndpointKey(ifindex=state.ifindex))
        self._purge_policy_keys(endpoint_id)
        self.flush_conntrack(endpoint_id)
        del self._endpoints[endpoint_id]

    def endpoint_ids(self) -> list[int]:
        return sorted(self._endpoints)

    def _state(self, endpoint_id: int) -> _EndpointState:
        try:
            return self._endpoints[endpoint_id]
        except KeyError:
            raise EndpointError(
                f"endpoint {endpoint_id} is not on node {self.config.node_name}"
            ) from None

    def set_audit(self, endpoint_id: int, enabled: bool) -> None:
        """Audit mode: would-be drops of the endpoint pass with verdict AUDIT."""
        state = self._state(endpoint_id)
        state.audit = enabled
        # a new revision: in revocation mode, audited connections are decided again
        state.revision = _next_revision(state.revision)
        self._write_endpoint(state)

    # ---- policy ------------------------------------------------------------------------

    def policy(self, endpoint_id: int) -> EndpointPolicy:
        return self._state(endpoint_id).policy

    def diff_policy(self, endpoint_id: int, desired: EndpointPolicy) -> PolicyDiff:
        """What replace_policy(endpoint_id, desired) would change; writes nothing."""
        return diff_policy(self._state(endpoint_id).policy, desired)

    def replace_policy(self, endpoint_id: int, desired: EndpointPolicy) -> PolicyDiff:
        """Replace the endpoint's policy atomically; returns what changed.

        The new entries are written under the endpoint's idle generation, then one update of
        the endpoint entry switches generation, enforcement flags and revision together, then
        the old generation is deleted: a packet sees the old policy or the new, never a mix.
        """
        state = self._state(endpoint_id)
        change = diff_policy(state.policy, desired)
        if change.empty and state.adopted is None:
            return change
        encoded = encode(desired)
        self._check_room(self.policy_map, len(state.encoded.hash_entries), encoded.hash_entries)
        self._check_room(
            self.policy_ranges, len(state.encoded.range_entries), encoded.range_entries
        )
        new_generation = state.generation ^ 1
        adopted = state.adopted is not None
        if adopted:  # an interrupted earlier agent may have left keys in the idle generation
            self._purge_policy_keys(endpoint_id, new_generation)
        keys, values = encoded.policy_items(endpoint_id, new_generation)
        range_keys, range_values = encoded.range_items(endpoint_id, new_generation)
        try:
            self.policy_map.update_batch(keys, values)
            self.policy_ranges.update_batch(range_keys, range_values)
        except MapFullError:
            # the idle generation is not live: take back what was written, so that a
            # later replace never switches to a half-written policy
            self.policy_map.delete_batch(keys)
            self.policy_ranges.delete_batch(range_keys)
            raise

        old_generation, old_encoded = state.generation, state.encoded
        state.generation = new_generation
        state.revision = _next_revision(state.revision)
        state.policy = desired
        state.encoded = encoded
        state.adopted = None
        self._write_endpoint(state)

        if adopted:
            self._purge_policy_keys(endpoint_id, old_generation)
        else:
            old_keys, _ = old_encoded.policy_items(endpoint_id, old_generation)
            old_range_keys, _ = old_encoded.range_items(endpoint_id, old_generation)
            self.policy_map.delete_batch(old_keys)
            self.policy_ranges.delete_batch(old_range_keys)
        return change

    def _check_room(self, bpf_map: BpfMap[Any, Any], live: int, new: Mapping[Any, Any]) -> None:
        # Both generations coexist for a moment: the map needs room for the old and the new.
        in_use = sum(
            len(s.encoded.hash_entries if bpf_map is self.policy_map else s.encoded.range_entries)
            for s in self._endpoints.values()
        )
        if in_use + len(new) > bpf_map.capacity:
            raise MapFullError(bpf_map.name, bpf_map.setting, bpf_map.capacity)

    def _purge_policy_keys(self, endpoint_id: int, generation: int | None = None) -> None:
        """Delete the endpoint's policy keys found in the maps (of one generation, or all)."""
        for table in (self.policy_map, self.policy_ranges):
            stale = [
                k
                for k in table.keys()
                if k.endpoint_id == endpoint_id and generation in (None, k.generation)
            ]
            table.delete_batch(stale)

    # ---- ipcache -----------------------------------------------------------------------

    def upsert_prefix(self, cidr: str, identity: int) -> None:
        """Map a prefix (host or CIDR, IPv4 or IPv6) to a security identity."""
        self.upsert_prefixes({cidr: identity})

    def upsert_prefixes(self, prefixes: Mapping[str, int]) -> None:
        """Map many prefixes to identities: all of them, or (on an invalid prefix or
        identity, or a full map) none -- the ipcache is left as it was."""
        hosts: list[tuple[abi.HostKey, abi.IpcacheValue]] = []
        cidrs: list[tuple[abi.LpmAddrKey, abi.IpcacheValue]] = []
        for cidr, identity in prefixes.items():
            network = _network(cidr)
            _check_identity(f"identity of prefix {cidr!r}", identity)
            value = abi.IpcacheValue(identity=identity)
            if _is_host(network):
                hosts.append((_host_key(network), value))
            else:
                cidrs.append((_lpm_key(network), value))
        writes: list[tuple[BpfMap[Any, Any], list[Any]]] = [
            (self.ipcache_hosts, hosts),
            (self.ipcache_cidrs, cidrs),
        ]
        # what each key maps to now, to put back if a map fills up half-way (the trie's
        # lookup is a longest-prefix match: its exact contents are mirrored here)
        exact_cidrs = self._cidr_contents() if cidrs else {}
        before = [
            [self.ipcache_hosts.lookup(key) for key, _ in hosts],
            [exact_cidrs.get(bytes(key)) for key, _ in cidrs],
        ]
        try:
            for table, items in writes:
                table.update_batch([k for k, _ in items], [v for _, v in items])
        except MapFullError:
            for (table, items), previous in zip(writes, before, strict=True):
                for (key, _), old in zip(items, previous, strict=True):
                    if old is None:
                        table.delete(key)
                    else:
                        table.update(key, old)
            raise
        for key, value in cidrs:
            exact_cidrs[bytes(key)] = value

    def _cidr_contents(self) -> dict[bytes, abi.IpcacheValue]:
        """The CIDR trie's exact keys and values: read from the map once (a restarted agent
        finds an earlier one's), then kept by this process, the map's only writer."""
        if self._cidrs is None:
            self._cidrs = {bytes(k): v for k, v in self.ipcache_cidrs.items()}
        return self._cidrs

    def remove_prefix(self, cidr: str) -> bool:
        network = _network(cidr)
        if _is_host(network):
            return self.ipcache_hosts.delete(_host_key(network))
        key = _lpm_key(network)
        if self._cidrs is not None:
            self._cidrs.pop(bytes(key), None)
        return self.ipcache_cidrs.delete(key)

    # ---- XDP prefilter -----------------------------------------------------------------

    def set_prefilter(self, deny: Mapping[str, int] | Iterable[str]) -> None:
        """Replace the node-wide CIDR deny list (CIDR -> rule id reported in drop events)."""
        wanted = dict(deny) if isinstance(deny, Mapping) else {cidr: 0 for cidr in deny}
        for cidr, rule_id in wanted.items():
            if isinstance(rule_id, bool) or not isinstance(rule_id, int):
                raise ValueError(f"rule id of prefix {cidr!r}: {rule_id!r} is not an integer")
            if not 0 <= rule_id <= _U32_MAX:
                raise ValueError(
                    f"rule id of prefix {cidr!r}: {rule_id} out of range 0..{_U32_MAX}"
                )
        keys = {bytes(_lpm_key(_network(c))): (_lpm_key(_network(c)), r) for c, r in wanted.items()}
        if len(keys) > self.prefilter_map.capacity:
            raise MapFullError(
                self.prefilter_map.name, self.prefilter_map.setting, self.prefilter_map.capacity
            )
        # Stale prefixes leave first: the map then never holds the old list and the new
        # one together, so a list that fits is never refused half-way.  (Each stale prefix
        # is being dropped anyway; a prefix in both lists is never absent.)
        for existing in list(self.prefilter_map.keys()):
            if bytes(existing) not in keys:
                self.prefilter_map.delete(existing)
        for key, rule_id in keys.values():
            self.prefilter_map.update(key, abi.PrefilterValue(rule_id=rule_id))

    def attach_uplink(self, interface: str, mode: XdpMode = "auto") -> None:
        """Attach the XDP prefilter to the node's uplink interface."""
        ifindex = self._ifindex(interface)
        pin = self.config.pin_dir / "links" / f"xdp-{interface}"
        with netns.entered(self.config.netns):
            self._uplinks[interface] = attach.attach_xdp(
                self._object.programs[abi.PROG_XDP_PREFILTER], ifindex, mode, pin
            )

    def detach_uplink(self, interface: str) -> None:
        if interface not in self._uplinks:
            raise AttachError(
                f"interface: no XDP prefilter of node {self.config.node_name} on {interface!r}"
            )
        attachment = self._uplinks.pop(interface)
        with netns.entered(self.config.netns):
            attach.detach(attachment)

    # ---- conntrack ---------------------------------------------------------------------

    def conntrack(self) -> list[tuple[abi.CtKey, abi.CtEntry]]:
        """Every conntrack entry, IPv4 and IPv6, IPv4 keys widened to CtKey."""
        ipv4 = [(key.widened(), entry) for key, entry in self.conntrack4_map.lookup_batch()]
        return ipv4 + self.conntrack6_map.lookup_batch()

    def flush_conntrack(self, endpoint_id: int | None = None) -> int:
        """Delete the conntrack entries of one endpoint (None: all); returns how many."""
        ifindex = None if endpoint_id is None else self._state(endpoint_id).ifindex
        flushed = 0
        for table in (self.conntrack4_map, self.conntrack6_map):
            doomed = [key for key in table.keys() if ifindex is None or key.ifindex == ifindex]
            for key in doomed:
                table.delete(key)
            flushed += len(doomed)
        return flushed

    def jiffies(self) -> int:
        """The kernel's jiffies_64, the clock of conntrack deadlines (``CtEntry.expires``)
        and drop intervals, read by the datapath's own ``septum_jiffies`` program."""
        result = self.test_run(abi.PROG_JIFFIES, bytes(_CLOCK_PACKET_BYTES))
        if result.retval != 0 or len(result.data_out) < 8:
            raise LibbpfError(
                f"reading the clock through {abi.PROG_JIFFIES}", 0, f"returned {result.retval}"
            )
        return int.from_bytes(result.data_out[:8], sys.byteorder)

    def gc_conntrack(self) -> int:
        """Delete the conntrack entries whose deadline has passed (both tables); returns
        how many.  The datapath already treats an expired entry as absent; collecting them
        keeps the LRU from evicting live connections to make room, and the listing honest.
        An entry is read again right before its deletion, so one a packet refreshed since
        the scan stays (a packet landing between that read and the delete can still lose
        its entry, as in Cilium's collector: it is then decided as a new connection)."""
        now = self.jiffies()
        removed = 0
        for table in (self.conntrack4_map, self.conntrack6_map):
            expired = [key for key, entry in table.lookup_batch() if entry.expires < now]
            for key in expired:
                entry = table.lookup(key)
                if entry is not None and entry.expires < now and table.delete(key):
                    removed += 1
        return removed

    # ---- counters and events -----------------------------------------------------------

    def counters(self) -> dict[CounterKey, CounterValue]:
        """Non-zero packet/byte counters by (direction, verdict, drop reason), all CPUs
        (one BPF_MAP_LOOKUP_BATCH of the per-CPU array)."""
        cpus = check(lib().libbpf_num_possible_cpus(), "libbpf_num_possible_cpus")
        entries = abi.COUNTER_ENTRIES
        keys = (ctypes.c_uint32 * entries)()
        values = (abi.Counter * (entries * cpus))()
        count = ctypes.c_uint32(entries)
        out_batch = ctypes.c_uint64(0)
        opts = BpfMapBatchOpts(sz=ctypes.sizeof(BpfMapBatchOpts))
        result = lib().bpf_map_lookup_batch(
            self._object.maps[abi.MAP_COUNTERS].fd,
            None,
            ctypes.byref(out_batch),
            keys,
            values,
            ctypes.byref(count),
            ctypes.byref(opts),
        )
        if result < 0 and result != -errno.ENOENT:
            check(result, "counters lookup_batch")
        flat = memoryview(values).cast("B").cast("Q").tolist()  # packets, bytes per CPU
        stride = 2 * cpus
        counters: dict[CounterKey, CounterValue] = {}
        for position in range(count.value):
            base = position * stride
            packets = sum(flat[base : base + stride : 2])
            if not packets:
                continue
            index = keys[position]
            reason = index % abi.DROP_REASON_SLOTS
            verdict = (index // abi.DROP_REASON_SLOTS) % abi.VERDICT_SLOTS
            direction = index // (abi.DROP_REASON_SLOTS * abi.VERDICT_SLOTS)
            key = CounterKey(abi.TrafficDirection(direction), abi.Verdict(verdict), reason)
            counters[key] = CounterValue(packets, sum(flat[base + 1 : base + stride : 2]))
        return counters

    def lost_events(self) -> int:
        """Events the kernel could not queue because the ring buffer was full."""
        cpus = check(lib().libbpf_num_possible_cpus(), "libbpf_num_possible_cpus")
        per_cpu = (ctypes.c_uint64 * cpus)()
        key = ctypes.c_uint32(0)
        fd = self._object.maps[abi.MAP_LOST_EVENTS].fd
        check(lib().bpf_map_lookup_elem(fd, ctypes.byref(key), per_cpu), "lost events lookup")
        return sum(per_cpu)

    def flow_reader(self) -> RingBufferReader:
        """The node's one ring-buffer consumer (raw batches, epoll wake-ups)."""
        if self._reader is None:
            events = self._object.maps[abi.MAP_EVENTS]
            self._reader = RingBufferReader(events.fd, events.capacity)
        return self._reader

    def read_flows(self, timeout_s: float | None = 0.0, max_events: int = 1 << 16) -> list[Flow]:
        """Decoded events waiting now, sleeping up to `timeout_s` for the first one."""
        reader = self.flow_reader()
        if timeout_s != 0.0 and not reader.wait(timeout_s):
            return []
        return decode_events(reader.read_raw(max_events))

    def iter_flows(self, timeout_s: float | None = None) -> Iterator[Flow]:
        """Decoded events as they come; stops after `timeout_s` without any (None: never)."""
        reader = self.flow_reader()
        while reader.wait(timeout_s):
            yield from decode_events(reader.read_raw())

    # ---- test runs ---------------------------------------------------------------------

    def program_fd(self, name: str) -> int:
        return self._object.programs[name]

    def test_run(
        self, program: str, packet: bytes, *, repeat: int = 1, ifindex: int = 0
    ) -> TestRunResult:
        """BPF_PROG_TEST_RUN of one of the object's programs (see septum.dataplane.testrun)."""
        with netns.entered(self.config.netns):
            return test_run(self._object.programs[program], packet, repeat=repeat, ifindex=ifindex)

    @property
    def recreated_maps(self) -> tuple[str, ...]:
        """Maps whose pins from an incompatible earlier load were replaced by empty ones
        at this load (the caller resyncs them from the control plane)."""
        return self._object.recreated

    @property
    def pin_dir(self) -> Path:
        return self.config.pin_dir


def address_bytes(address: str) -> bytes:
    """16-byte form of an address as it appears in events and conntrack keys."""
    packed = ipaddress.ip_address(address).packed
    return packed.ljust(16, b"\0")


__all__ = [
    "CounterKey",
    "CounterValue",
    "EndpointSpec",
    "NodeDatapath",
    "address_bytes",
]


def _exact_first_flags(hash_entries: Iterable[tuple[int, int, int, int]]) -> int:
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
