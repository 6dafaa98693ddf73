"""Entry point for policy objects: dispatch on apiVersion/kind, wrap errors."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from septum.operator.engine.cluster import audit_mode_on
from septum.operator.engine.errors import FieldErrors, InvalidPolicy, PolicyError
from septum.operator.engine.parse_netpol import parse_network_policy
from septum.operator.engine.parse_septum import parse_septum_policy
from septum.operator.engine.parse_tiers import (
    parse_admin_network_policy,
    parse_baseline_admin_network_policy,
    parse_cluster_network_policy,
)
from septum.operator.engine.rules import Kind, Policy, PolicyKey

SEPTUM_GROUP = "septum.io"
# (apiVersion group, kind) accepted for each kind; Cilium's group is accepted too
# so a policy can be checked before its apiVersion is changed.
_API_GROUPS = {
    Kind.NETWORK_POLICY: {"networking.k8s.io"},
    Kind.SEPTUM_POLICY: {SEPTUM_GROUP},
    Kind.SEPTUM_CLUSTERWIDE: {SEPTUM_GROUP},
    Kind.CLUSTER_NETWORK_POLICY: {"policy.networking.k8s.io"},
    Kind.ADMIN_NETWORK_POLICY: {"policy.networking.k8s.io"},
    Kind.BASELINE_ADMIN_NETWORK_POLICY: {"policy.networking.k8s.io"},
}


def policy_key(obj: Mapping[str, Any]) -> PolicyKey:
    """The identity of a policy object, read before (and whether or not) it parses."""
    if not isinstance(obj, Mapping):
        return PolicyKey("", "", "")  # parse_policy then rejects its kind
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), Mapping) else {}
    assert isinstance(meta, Mapping)
    kind = str(obj.get("kind", ""))
    namespaced = kind in (Kind.NETWORK_POLICY.value, Kind.SEPTUM_POLICY.value)
    namespace = str(meta.get("namespace") or "default") if namespaced else ""
    return PolicyKey(kind, namespace, str(meta.get("name", "")))


def parse_policy(obj: Mapping[str, Any]) -> Policy:
    """Parse one policy object; raises InvalidPolicy naming every field path at fault."""
    key = policy_key(obj)
    try:
        policy = _parse(obj, key)
    except PolicyError as err:
        raise _rejected(key, [err]) from err
    except FieldErrors as err:
        raise _rejected(key, err.errors) from err
    meta = obj.get("metadata")
    if isinstance(meta, Mapping) and audit_mode_on(meta.get("annotations")):
        policy = dataclasses.replace(policy, audit=True)
    return policy


def _rejected(key: PolicyKey, errors: list[PolicyError]) -> InvalidPolicy:
    name = f"{key.namespace + '/' if key.namespace else ''}{key.name}"
    return InvalidPolicy(key.kind or "object", name, errors)


def _parse(obj: Mapping[str, Any], key: PolicyKey) -> Policy:
    try:
        kind = Kind(key.kind)
    except ValueError:
        raise PolicyError("kind", f"unsupported kind {key.kind!r}") from None
    api_version = str(obj.get("apiVersion", ""))
    group = api_version.rpartition("/")[0]
    if group not in _API_GROUPS[kind]:
        raise PolicyError("apiVersion", f"{api_version!r} does not serve kind {kind.value}")
    if not key.name:
        raise PolicyError("metadata.name", "required field is missing")
    if kind is Kind.NETWORK_POLICY:
        return parse_network_policy(obj, key.namespace, key.name)
    if kind in (Kind.SEPTUM_POLICY, Kind.SEPTUM_CLUSTERWIDE):
        return parse_septum_policy(obj, kind, key.namespace, key.name)
    if kind is Kind.CLUSTER_NETWORK_POLICY:
        if not api_version.endswith("/v1alpha2"):
            raise PolicyError(
                "apiVersion", "ClusterNetworkPolicy is served as policy.networking.k8s.io/v1alpha2"
            )
        return parse_cluster_network_policy(obj, key.name)
    if kind is Kind.ADMIN_NETWORK_POLICY:
        return parse_admin_network_policy(obj, key.name)
    return parse_baseline_admin_network_policy(obj, key.name)
