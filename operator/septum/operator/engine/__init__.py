"""The Septum policy engine: pure Python, standard library only.

Cluster objects and policies (NetworkPolicy, SeptumNetworkPolicy,
SeptumClusterwideNetworkPolicy, ClusterNetworkPolicy, AdminNetworkPolicy,
BaselineAdminNetworkPolicy) in; per-endpoint datapath entries, the ipcache,
explanations and what-if reports out. See docs/policy-semantics.md.
"""

from septum.operator.engine.changes import ChangeSet, LoadResult
from septum.operator.engine.entries import DirectionPolicy, EntryDiff, PolicyEntry, Verdict
from septum.operator.engine.errors import (
    EngineError,
    EngineNotEmpty,
    IdentitiesExhausted,
    InvalidObject,
    InvalidPolicy,
    PolicyError,
    UnknownEndpoint,
)
from septum.operator.engine.explain import Explanation, explain
from septum.operator.engine.parse import parse_policy
from septum.operator.engine.state import EndpointPolicy, Engine, apply_diff
from septum.operator.engine.whatif import Apply, Delete, Flow, WhatIfReport, what_if

__all__ = [
    "Apply",
    "ChangeSet",
    "Delete",
    "DirectionPolicy",
    "EndpointPolicy",
    "Engine",
    "EngineError",
    "EngineNotEmpty",
    "IdentitiesExhausted",
    "EntryDiff",
    "Explanation",
    "Flow",
    "InvalidObject",
    "InvalidPolicy",
    "LoadResult",
    "PolicyEntry",
    "PolicyError",
    "UnknownEndpoint",
    "Verdict",
    "WhatIfReport",
    "apply_diff",
    "explain",
    "parse_policy",
    "what_if",
]
