"""NodeDatapath: the public, typed API over one node's datapath.

One NodeDatapath owns the loaded object, the node's pinned maps and the programs attached
to the node's interfaces.  Later parts of Septum (the agent/operator, the lab, the flow
server) build on this API only.

It is a facade: each concern lives in its own module, as Cilium splits ``pkg/maps``, and
the methods here delegate to them.

* ``endpoints``: pods, their ``sep_endpoints`` entries and adoption after a restart
  (``endpointentry`` works out the entries without I/O);
* ``hostendpoint``: the node's own interfaces under one host policy (the host firewall);
* ``policymap``: the policy maps and the generation swap of ``replace_policy``;
* ``ipcache``: prefix -> identity, all or nothing;
* ``prefilter``: the XDP deny list; ``hooks``: where the programs are attached;
* ``conntrack``: listing, flushing and collecting expired entries;
* ``counters`` and ``flowstream``: what the datapath reports.
"""

from __future__ import annotations

import ctypes
import socket
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path

from septum.dataplane import abi, loader, netns
from septum.dataplane.addressing import address_bytes
from septum.dataplane.attach import XdpMode
from septum.dataplane.config import DatapathConfig, kernel_config
from septum.dataplane.conntrack import CLOCK_PACKET, Conntrack, jiffies_from_test_run
from septum.dataplane.counters import CounterKey, CounterValue, read_counters
from septum.dataplane.endpointentry import EndpointSpec
from septum.dataplane.endpoints import Endpoints, PinnedEndpoint
from septum.dataplane.errors import ProgramError
from septum.dataplane.events import Flow
from septum.dataplane.flowstream import FlowStream
from septum.dataplane.hooks import NodeHooks
from septum.dataplane.hostendpoint import HostEndpoint, HostEndpointInfo
from septum.dataplane.ipcache import Ipcache
from septum.dataplane.kernelhz import kernel_hz
from septum.dataplane.localaddrs import LocalAddresses
from septum.dataplane.maps import BpfMap, K, PerCpuMap, V
from septum.dataplane.policy import EndpointPolicy, PolicyDiff, diff_policy
from septum.dataplane.policymap import PolicyMaps
from septum.dataplane.prefilter import Prefilter
from septum.dataplane.ringbuf import RingBufferReader
from septum.dataplane.testrun import TestRunResult, test_run


class NodeDatapath:
    """The datapath of one node.  Use as a context manager, or call close()/teardown()."""

    def __init__(self, config: DatapathConfig) -> None:
        self.config = config
        self._object = loader.load(config)
        self.endpoints_map = self._map(abi.MAP_ENDPOINTS, abi.EndpointKey, abi.Endpoint)
        self.ipcache_hosts = self._map(abi.MAP_IPCACHE_HOST, abi.HostKey, abi.IpcacheValue)
        self.ipcache_cidrs = self._map(abi.MAP_IPCACHE, abi.LpmAddrKey, abi.IpcacheValue)
        self.policy_map = self._map(abi.MAP_POLICY, abi.PolicyKey, abi.PolicyValue)
        self.policy_ranges = self._map(abi.MAP_POLICY_RANGES, abi.PolicyRangeKey, abi.PolicyValue)
        self.conntrack4_map = self._map(abi.MAP_CONNTRACK4, abi.Ct4Key, abi.CtEntry)
        self.conntrack6_map = self._map(abi.MAP_CONNTRACK6, abi.CtKey, abi.CtEntry)
        self.prefilter_map = self._map(abi.MAP_PREFILTER, abi.LpmAddrKey, abi.PrefilterValue)
        self.local_addrs_map = self._map(abi.MAP_LOCAL_ADDRS, abi.HostKey, abi.LocalAddr)
        self.config_map = self._map(abi.MAP_CONFIG, ctypes.c_uint32, abi.Config)
        self.counters_map = self._per_cpu_map(abi.MAP_COUNTERS, ctypes.c_uint32, abi.Counter)
        self.lost_events_map = self._per_cpu_map(
            abi.MAP_LOST_EVENTS, ctypes.c_uint32, ctypes.c_uint64
        )

        self._hooks = NodeHooks(
            self._object.programs, config.pin_dir, config.netns, config.node_name
        )
        self._policies = PolicyMaps(self.policy_map, self.policy_ranges)
        self._conntrack = Conntrack(self.conntrack4_map, self.conntrack6_map, self.jiffies)
        self._endpoints = Endpoints(
            self.endpoints_map,
            self._hooks,
            self._policies,
            self._conntrack,
            config.node_name,
            LocalAddresses(self.local_addrs_map, self._hooks.link_address),
        )
        self._host = HostEndpoint(self.endpoints_map, self._hooks, self._policies, self._conntrack)
        self._ipcache = Ipcache(self.ipcache_hosts, self.ipcache_cidrs)
        self._prefilter = Prefilter(self.prefilter_map)
        events = self._object.maps[abi.MAP_EVENTS]
        self._flows = FlowStream(events.fd, events.capacity, self.lost_events_map)
        self.write_config(kernel_config(config))

    def _map(self, name: str, key: type[K], value: type[V]) -> BpfMap[K, V]:
        loaded = self._object.maps[name]
        return BpfMap(name, loaded.fd, key, value, loaded.capacity, loaded.setting)

    def _per_cpu_map(self, name: str, key: type[K], value: type[V]) -> PerCpuMap[K, V]:
        loaded = self._object.maps[name]
        return PerCpuMap(name, loaded.fd, key, value, loaded.capacity, loaded.setting)

    # ---- lifecycle ---------------------------------------------------------------------

    def __enter__(self) -> NodeDatapath:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Release this process's handles; pinned maps and attached programs stay."""
        self._flows.close()
        self._object.close()

    def teardown(self) -> None:
        """Detach everything this node's datapath attached, remove its pins, close.  Every
        step runs even when an earlier one fails (e.g. the node's namespace is already
        gone); the first error is raised at the end."""
        steps: list[Callable[[], object]] = [
            *(partial(self.remove_endpoint, e) for e in self._endpoints.ids()),
            self.remove_host_endpoint,
            *(partial(self.detach_uplink, i) for i in self._hooks.uplinks()),
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

    def write_config(self, value: abi.Config) -> None:
        """Replace the kernel-side node configuration (benchmarks toggle its flags); a zero
        `kernel_hz` is filled in with the running kernel's HZ."""
        if value.kernel_hz == 0:
            value.kernel_hz = kernel_hz()
        self.config_map.update(ctypes.c_uint32(0), value)

    def set_revoke_on_policy_change(self, enabled: bool) -> None:
        self.config = replace(self.config, revoke_on_policy_change=enabled)
        self.write_config(kernel_config(self.config))

    # ---- endpoints ---------------------------------------------------------------------

    def upsert_endpoint(self, spec: EndpointSpec) -> None:
        """Add or update a pod and attach the tc programs to its host-side veth.

        A pod an earlier agent of this node left in the pinned maps (same endpoint id on
        the same interface) keeps its pinned policy enforced until replace_policy: an agent
        restart never opens a pod.  A new pod whose programs cannot be attached is not
        added (nothing of it stays in the maps)."""
        self._endpoints.upsert(spec)

    def remove_endpoint(self, endpoint_id: int) -> None:
        """Detach, forget the pod's map entry, its policy and its conntrack entries."""
        self._endpoints.remove(endpoint_id)

    def endpoint_ids(self) -> list[int]:
        return self._endpoints.ids()

    def endpoint_revision(self, endpoint_id: int) -> int:
        """The policy revision the endpoint's entry in the kernel holds: bumped by every
        replace_policy that changed something and by set_audit; an adopted endpoint keeps
        the revision its earlier agent realized.  0 when its entry is missing."""
        return self._endpoints.revision(endpoint_id)

    def pinned_endpoints(self) -> list[PinnedEndpoint]:
        """Every pod entry in the node's pinned endpoint map: this process's and those an
        earlier agent left (the host endpoint's entries are not listed)."""
        found: list[PinnedEndpoint] = []
        with netns.entered(self.config.netns):
            for endpoint_id, ifindex, ipv4, ipv6 in self._endpoints.pinned():
                try:
                    name: str | None = socket.if_indextoname(ifindex)
                except OSError:
                    name = None
                found.append(PinnedEndpoint(endpoint_id, ifindex, name, ipv4, ipv6))
        return found

    def remove_unregistered_endpoints(self) -> list[PinnedEndpoint]:
        """Remove the pinned pod entries this process did not register (upsert_endpoint)
        since it started: their links, policy keys and conntrack entries too.  Call it once
        every live pod is re-registered after a restart; returns what was removed."""
        stale = [
            pinned
            for pinned in self.pinned_endpoints()
            if not self._endpoints.registered(pinned.endpoint_id, pinned.ifindex)
        ]
        for pinned in stale:
            self._endpoints.remove_pinned(pinned.endpoint_id, pinned.ifindex)
        return stale

    def set_audit(self, endpoint_id: int, enabled: bool) -> None:
        """Audit mode: would-be drops of the endpoint pass with verdict AUDIT."""
        self._endpoints.set_audit(endpoint_id, enabled)

    # ---- policy ------------------------------------------------------------------------

    def policy(self, endpoint_id: int) -> EndpointPolicy:
        return self._endpoints.state(endpoint_id).policy

    def diff_policy(self, endpoint_id: int, desired: EndpointPolicy) -> PolicyDiff:
        """What replace_policy(endpoint_id, desired) would change; writes nothing."""
        return diff_policy(self._endpoints.state(endpoint_id).policy, desired)

    def replace_policy(self, endpoint_id: int, desired: EndpointPolicy) -> PolicyDiff:
        """Replace the endpoint's policy atomically; returns what changed.

        The new entries are written under the endpoint's idle generation, then one update of
        the endpoint entry switches generation, enforcement flags and revision together, then
        the old generation is deleted: a packet sees the old policy or the new, never a mix.
        """
        return self._policies.replace(
            self._endpoints.state(endpoint_id),
            desired,
            self._endpoints.encoded_policies() + self._host.encoded(),
            self._endpoints.publish,
        )

    # ---- host endpoint (host firewall) -------------------------------------------------

    def set_host_endpoint(
        self,
        interfaces: Sequence[str],
        identity: int = abi.IDENTITY_HOST,
        policy: EndpointPolicy | None = None,
    ) -> PolicyDiff:
        """Put the node's own traffic on `interfaces` under `policy` (Cilium's host firewall);
        returns what changed in the policy.

        The programs on each interface decide only the node's own packets: ingress packets
        addressed to, and egress packets sent from, an address the ipcache maps to the
        ``host`` identity (write the node's addresses with ``upsert_prefixes`` first);
        forwarded pod traffic passes untouched.  An unenforced policy (the default) decides
        nothing but tracks the node's connections, so a later policy does not cut them.
        Calling again replaces the interfaces, identity and policy atomically, as
        replace_policy does for a pod."""
        return self._host.set(
            interfaces,
            identity,
            policy if policy is not None else EndpointPolicy(),
            self._endpoints.encoded_policies(),
        )

    def host_endpoint(self) -> HostEndpointInfo | None:
        """The node's host endpoint as this process set it, or None."""
        return self._host.info()

    def set_host_audit(self, enabled: bool) -> None:
        """Host audit mode: the node's would-be drops pass with verdict AUDIT."""
        self._host.set_audit(enabled)

    def remove_host_endpoint(self) -> None:
        """Detach the host programs and forget the host's entries, policy and conntrack
        entries (idempotent)."""
        self._host.remove()

    # ---- ipcache -----------------------------------------------------------------------

    def upsert_prefix(self, cidr: str, identity: int) -> None:
        """Map a prefix (host or CIDR, IPv4 or IPv6) to a security identity."""
        self._ipcache.upsert({cidr: identity})

    def upsert_prefixes(self, prefixes: Mapping[str, int]) -> None:
        """Map many prefixes to identities: all of them, or (on an invalid prefix or
        identity, or a full map) none -- the ipcache is left as it was."""
        self._ipcache.upsert(prefixes)

    def remove_prefix(self, cidr: str) -> bool:
        return self._ipcache.remove(cidr)

    # ---- XDP prefilter -----------------------------------------------------------------

    def set_prefilter(self, deny: Mapping[str, int] | Iterable[str]) -> None:
        """Replace the node-wide CIDR deny list (CIDR -> rule id reported in drop events)."""
        self._prefilter.replace(deny)

    def attach_uplink(self, interface: str, mode: XdpMode = "auto") -> None:
        """Attach the XDP prefilter to the node's uplink interface."""
        self._hooks.attach_uplink(interface, mode)

    def detach_uplink(self, interface: str) -> None:
        self._hooks.detach_uplink(interface)

    # ---- conntrack ---------------------------------------------------------------------

    def conntrack(self) -> list[tuple[abi.CtKey, abi.CtEntry]]:
        """Every conntrack entry, IPv4 and IPv6, IPv4 keys widened to CtKey."""
        return self._conntrack.entries()

    def flush_conntrack(self, endpoint_id: int | None = None) -> int:
        """Delete the conntrack entries of one endpoint (None: all); returns how many."""
        ifindex = None if endpoint_id is None else self._endpoints.state(endpoint_id).ifindex
        return self._conntrack.flush(ifindex)

    def jiffies(self) -> int:
        """The kernel's jiffies_64, the clock of conntrack deadlines (``CtEntry.expires``)
        and drop intervals, read by the datapath's own ``septum_jiffies`` program."""
        return jiffies_from_test_run(self.test_run(abi.PROG_JIFFIES, CLOCK_PACKET))

    def gc_conntrack(self) -> int:
        """Delete the conntrack entries whose deadline has passed (both tables); returns
        how many (see Conntrack.collect_expired)."""
        return self._conntrack.collect_expired()

    # ---- counters and events -----------------------------------------------------------

    def counters(self) -> dict[CounterKey, CounterValue]:
        """Non-zero packet/byte counters by (direction, verdict, drop reason), all CPUs
        (one BPF_MAP_LOOKUP_BATCH of the per-CPU array)."""
        return read_counters(self.counters_map)

    def lost_events(self) -> int:
        """Events the kernel could not queue because the ring buffer was full."""
        return self._flows.lost()

    def flow_reader(self) -> RingBufferReader:
        """The node's one ring-buffer consumer (raw batches, epoll wake-ups)."""
        return self._flows.reader()

    def read_flows(self, timeout_s: float | None = 0.0, max_events: int = 1 << 16) -> list[Flow]:
        """Decoded events waiting now, sleeping up to `timeout_s` for the first one."""
        return self._flows.read(timeout_s, max_events)

    def iter_flows(self, timeout_s: float | None = None) -> Iterator[Flow]:
        """Decoded events as they come; stops after `timeout_s` without any (None: never)."""
        return self._flows.follow(timeout_s)

    # ---- test runs ---------------------------------------------------------------------

    def program_fd(self, name: str) -> int:
        try:
            return self._object.programs[name]
        except KeyError:
            known = ", ".join(sorted(self._object.programs))
            raise ProgramError(f"program: {name!r} is not one of {known}") from None

    def test_run(
        self, program: str, packet: bytes, *, repeat: int = 1, ifindex: int = 0
    ) -> TestRunResult:
        """BPF_PROG_TEST_RUN of one of the object's programs (see septum.dataplane.testrun)."""
        with netns.entered(self.config.netns):
            return test_run(self.program_fd(program), packet, repeat=repeat, ifindex=ifindex)

    @property
    def recreated_maps(self) -> tuple[str, ...]:
        """Maps whose pins from an incompatible earlier load were replaced by empty ones
        at this load (the caller resyncs them from the control plane)."""
        return self._object.recreated

    @property
    def pin_dir(self) -> Path:
        return self.config.pin_dir


__all__ = [
    "CounterKey",
    "CounterValue",
    "EndpointSpec",
    "HostEndpointInfo",
    "NodeDatapath",
    "PinnedEndpoint",
    "address_bytes",
]
