"""Datapath configuration: node identity, map capacities, timeouts, event settings."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from septum.dataplane.prereq import BPFFS, DEFAULT_OBJECT

_NODE_NAME = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$")


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
    # network namespace (name under /run/netns) the node's interfaces live in; None = ours
    netns: str | None = None

    def __post_init__(self) -> None:
        if not _NODE_NAME.match(self.node_name):
            raise ValueError(
                f"DatapathConfig.node_name: {self.node_name!r} is not a DNS label "
                "(lowercase letters, digits, '-', '.')"
            )
        size = self.ringbuf_bytes
        if size < 4096 or size & (size - 1):
            raise ValueError(f"DatapathConfig.ringbuf_bytes: {size} must be a power of two >= 4096")
        for name in (
            "endpoints",
            "ipcache_hosts",
            "ipcache_cidrs",
            "policy_entries",
            "policy_ranges",
            "conntrack_entries",
            "fragment_entries",
            "drop_ratelimit_entries",
            "prefilter_entries",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"DatapathConfig.{name}: must be at least 1")

    @property
    def pin_dir(self) -> Path:
        """Per node, because several lab nodes share one kernel."""
        return self.pin_root / self.node_name
