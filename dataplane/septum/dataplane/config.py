"""Datapath configuration: node identity, map capacities, timeouts, event settings.

Every field is checked when the config is built (ConfigError naming the field), and
:func:`kernel_config` turns it into the kernel-side ``struct septum_config``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from septum.dataplane import abi
from septum.dataplane.errors import ConfigError
from septum.dataplane.prereq import BPFFS, DEFAULT_OBJECT

_NODE_NAME = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$")
_U32_MAX: Final = 0xFFFFFFFF
# max_entries is a u32 and hash maps refuse more than 2^31 (E2BIG): one bound for every
# capacity, so no value is truncated on its way to the kernel.  A capacity within it can
# still fail the load for lack of memory, which the loader reports and cleans up after.
_MAX_ENTRIES: Final = 1 << 31
_CAPACITY_FIELDS: Final = (
    "endpoints",
    "ipcache_hosts",
    "ipcache_cidrs",
    "policy_entries",
    "policy_ranges",
    "conntrack_entries",
    "fragment_entries",
    "drop_ratelimit_entries",
    "prefilter_entries",
)
# __u32 fields of struct septum_config.  0 is refused too: a zero established timeout makes
# the datapath ignore sep_config altogether (septum_config_get), any other zero timeout
# expires entries as they are made, and a zero interval turns drop rate limiting off.
_TIMEOUT_FIELDS: Final = (
    "ct_timeout_tcp_syn_s",
    "ct_timeout_tcp_established_s",
    "ct_timeout_tcp_close_s",
    "ct_timeout_other_s",
    "drop_event_interval_ms",
)


def _check_int(name: str, value: object, low: int, high: int) -> None:
    # bool is an int subclass, but True as a capacity or timeout is a mistake, not 1
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f"DatapathConfig.{name}: {value!r} is not an integer")
    if not low <= value <= high:
        raise ConfigError(f"DatapathConfig.{name}: {value} is out of range ({low}..{high})")


@dataclass(frozen=True)
class DatapathConfig:
    """Everything the node datapath is sized and tuned from.

    Capacities are maximum entries of the BPF maps; a full map raises MapFullError naming
    the field here to raise.  Changing a capacity for a node whose maps are already pinned
    replaces those maps with fresh, empty ones at the next load (see loader).
    """

    node_name: str
    bpf_object: Path = DEFAULT_OBJECT
    pin_root: Path = BPFFS / "septum"
    # map capacities
    endpoints: int = 1024
    ipcache_hosts: int = 65536
    ipcache_cidrs: int = 16384
    policy_entries: int = 65536
    policy_ranges: int = 16384
    conntrack_entries: int = 262144
    fragment_entries: int = 8192
    drop_ratelimit_entries: int = 16384
    prefilter_entries: int = 16384
    ringbuf_bytes: int = 1 << 22
    # conntrack timeouts (Cilium's defaults)
    ct_timeout_tcp_syn_s: int = 60
    ct_timeout_tcp_established_s: int = 21600
    ct_timeout_tcp_close_s: int = 10
    ct_timeout_other_s: int = 60
    # at most one drop event per flow and reason per interval
    drop_event_interval_ms: int = 1000
    # established connections across a policy change: keep (False, Cilium's behaviour) or
    # re-check them against the new policy on their next packet (True)
    revoke_on_policy_change: bool = False
    # pod-to-pod connections on this node go through the node's IP stack (True, Cilium's
    # "legacy host routing") or skip it, both ways, from the source pod's program (False)
    host_legacy_routing: bool = False
    # network namespace (name under /run/netns) the node's interfaces live in; None = ours
    netns: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.node_name, str) or not _NODE_NAME.match(self.node_name):
            raise ConfigError(
                f"DatapathConfig.node_name: {self.node_name!r} is not a DNS label "
                "(lowercase letters, digits, '-', '.')"
            )
        # Checked here, not when the values reach the kernel: NodeDatapath pins maps sized
        # from this before it writes sep_config, so a late failure would leave pins behind.
        for name in (*_CAPACITY_FIELDS, "ringbuf_bytes"):
            _check_int(name, getattr(self, name), 1, _MAX_ENTRIES)
        size = self.ringbuf_bytes
        if size < 4096 or size & (size - 1):
            raise ConfigError(
                f"DatapathConfig.ringbuf_bytes: {size} must be a power of two >= 4096"
            )
        for name in _TIMEOUT_FIELDS:
            _check_int(name, getattr(self, name), 1, _U32_MAX)
        for name in ("bpf_object", "pin_root"):
            if not isinstance(getattr(self, name), Path):
                raise ConfigError(f"DatapathConfig.{name}: {getattr(self, name)!r} is not a Path")
        if self.netns is not None and not isinstance(self.netns, str):
            raise ConfigError(f"DatapathConfig.netns: {self.netns!r} is not a namespace name")
        for name in ("revoke_on_policy_change", "host_legacy_routing"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"DatapathConfig.{name}: {getattr(self, name)!r} is not a bool")

    @property
    def local_addr_entries(self) -> int:
        """Capacity of ``sep_local_addrs``: an IPv4 and an IPv6 address per endpoint."""
        return 2 * self.endpoints

    @property
    def pin_dir(self) -> Path:
        """Per node, because several lab nodes share one kernel."""
        return self.pin_root / self.node_name


def kernel_config(config: DatapathConfig) -> abi.Config:
    """The kernel-side configuration (``sep_config``) for `config`; ``kernel_hz`` is left 0
    for the writer to fill in with the running kernel's HZ."""
    flags = abi.CFG_F_REVOKE_ON_POLICY_CHANGE if config.revoke_on_policy_change else 0
    if not config.host_legacy_routing:
        flags |= abi.CFG_F_LOCAL_DELIVERY
    return abi.Config(
        ct_timeout_tcp_syn_s=config.ct_timeout_tcp_syn_s,
        ct_timeout_tcp_established_s=config.ct_timeout_tcp_established_s,
        ct_timeout_tcp_close_s=config.ct_timeout_tcp_close_s,
        ct_timeout_other_s=config.ct_timeout_other_s,
        drop_event_interval_ms=config.drop_event_interval_ms,
        flags=flags,
    )
