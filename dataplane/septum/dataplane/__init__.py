"""Septum's node datapath: the eBPF programs' Python side.

The public API (re-exported lazily, so importing ``septum.dataplane.abi`` stays cheap):

* :class:`NodeDatapath` with :class:`DatapathConfig`: load/pin/attach one node's datapath,
  upsert/remove endpoints (:class:`EndpointSpec`), replace/diff an endpoint's policy
  (:class:`EndpointPolicy` of :class:`PolicyEntry`), ipcache prefixes, audit mode, the XDP
  deny list, counters and flow events (:class:`Flow`, or raw batches via ``flow_reader()``).
* ``septum.dataplane.abi``: the kernel ABI (the contract with the C side).
* ``septum.dataplane.errors``: the exception tree (:class:`DatapathError` and children).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "NodeDatapath": "septum.dataplane.datapath",
    "EndpointSpec": "septum.dataplane.datapath",
    "CounterKey": "septum.dataplane.datapath",
    "CounterValue": "septum.dataplane.datapath",
    "DatapathConfig": "septum.dataplane.config",
    "EndpointPolicy": "septum.dataplane.policy",
    "PolicyEntry": "septum.dataplane.policy",
    "PolicyDiff": "septum.dataplane.policy",
    "Flow": "septum.dataplane.events",
    "DatapathError": "septum.dataplane.errors",
    "PrerequisiteError": "septum.dataplane.errors",
    "MapFullError": "septum.dataplane.errors",
    "PolicyEntryError": "septum.dataplane.errors",
    "EndpointError": "septum.dataplane.errors",
    "ConfigError": "septum.dataplane.errors",
    "PrefixError": "septum.dataplane.errors",
    "AttachError": "septum.dataplane.errors",
}

if TYPE_CHECKING:
    from septum.dataplane.config import DatapathConfig
    from septum.dataplane.datapath import CounterKey, CounterValue, EndpointSpec, NodeDatapath
    from septum.dataplane.errors import (
        AttachError,
        ConfigError,
        DatapathError,
        EndpointError,
        MapFullError,
        PolicyEntryError,
        PrefixError,
        PrerequisiteError,
    )
    from septum.dataplane.events import Flow
    from septum.dataplane.policy import EndpointPolicy, PolicyDiff, PolicyEntry


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'septum.dataplane' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "AttachError",
    "ConfigError",
    "CounterKey",
    "CounterValue",
    "DatapathConfig",
    "DatapathError",
    "EndpointError",
    "EndpointPolicy",
    "EndpointSpec",
    "Flow",
    "MapFullError",
    "NodeDatapath",
    "PolicyDiff",
    "PolicyEntry",
    "PolicyEntryError",
    "PrefixError",
    "PrerequisiteError",
]
