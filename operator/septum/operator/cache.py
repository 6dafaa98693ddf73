"""The operator's view of the cluster, kept current from watch events (every replica keeps one).

Pods, namespaces and nodes are kept parsed (the engine's own parsers), policies raw (the
engine validates them, and their status is compared against what it should be). A replica
that is not the leader keeps its view warm, so that it can act at once when it takes over.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from septum.operator.engine import InvalidObject
from septum.operator.engine.cluster import (
    Namespace,
    Node,
    Pod,
    PodKey,
    parse_namespace,
    parse_node,
    parse_pod,
)
from septum.operator.engine.hosts import node_labels
from septum.operator.engine.labels import LabelFilter, LabelSet, pod_label_set
from septum.operator.engine.rules import Policy

log = logging.getLogger(__name__)
K = TypeVar("K")
V = TypeVar("V")

# The policy kinds the operator watches: (group, version, plural) -> kind.
SEPTUM_POLICY = ("septum.io", "v2", "septumnetworkpolicies")
SEPTUM_CLUSTERWIDE = ("septum.io", "v2", "septumclusterwidenetworkpolicies")
NETWORK_POLICY = ("networking.k8s.io", "v1", "networkpolicies")
CLUSTER_NETWORK_POLICY = ("policy.networking.k8s.io", "v1alpha2", "clusternetworkpolicies")
POLICY_RESOURCES = (SEPTUM_POLICY, SEPTUM_CLUSTERWIDE, NETWORK_POLICY, CLUSTER_NETWORK_POLICY)

Resource = tuple[str, str, str]
ObjectKey = tuple[Resource, str, str]  # (resource, namespace or "", name)


def object_key(resource: Resource, obj: Mapping[str, Any]) -> ObjectKey:
    meta = obj.get("metadata") or {}
    return (resource, str(meta.get("namespace") or ""), str(meta.get("name") or ""))


@dataclass
class ClusterCache:
    cluster_name: str = "default"
    label_filter: LabelFilter = field(default_factory=LabelFilter)
    on_change: Callable[[], None] = lambda: None
    pods: dict[PodKey, Pod] = field(default_factory=dict)
    namespaces: dict[str, Namespace] = field(default_factory=dict)
    nodes: dict[str, Node] = field(default_factory=dict)
    policies: dict[ObjectKey, Mapping[str, Any]] = field(default_factory=dict)

    # ---- events ----------------------------------------------------------

    def pod_event(self, kind: str | None, obj: Mapping[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        key = PodKey(str(meta.get("namespace") or "default"), str(meta.get("name", "")))
        _apply(self.pods, key, kind, obj, parse_pod, "pod")
        self.on_change()

    def namespace_event(self, kind: str | None, obj: Mapping[str, Any]) -> None:
        name = str((obj.get("metadata") or {}).get("name", ""))
        _apply(self.namespaces, name, kind, obj, parse_namespace, "namespace")
        self.on_change()

    def node_event(self, kind: str | None, obj: Mapping[str, Any]) -> None:
        name = str((obj.get("metadata") or {}).get("name", ""))
        _apply(self.nodes, name, kind, obj, parse_node, "node")
        self.on_change()

    def policy_event(self, resource: Resource, kind: str | None, obj: Mapping[str, Any]) -> None:
        key = object_key(resource, obj)
        if kind == "DELETED":
            self.policies.pop(key, None)
        else:
            self.policies[key] = obj
        self.on_change()

    # ---- derived ---------------------------------------------------------

    def pod_label_set(self, pod: Pod) -> LabelSet | None:
        """The pod's security label set; None for host-network pods and unknown namespaces."""
        namespace = self.namespaces.get(pod.key.namespace)
        if pod.host_network or namespace is None:
            return None
        return pod_label_set(
            pod.key.namespace,
            pod.label_map,
            dict(namespace.labels),
            pod.service_account,
            self.cluster_name,
            self.label_filter,
        )

    def label_set_counts(self) -> Counter[LabelSet]:
        """How many pods carry each label set (each set needs one identity)."""
        counts: Counter[LabelSet] = Counter()
        for pod in self.pods.values():
            labels = self.pod_label_set(pod)
            if labels is not None:
                counts[labels] += 1
        return counts


def _apply(
    table: dict[K, V],
    key: K,
    kind: str | None,
    obj: Mapping[str, Any],
    parse: Callable[[Mapping[str, Any]], V],
    what: str,
) -> None:
    """One watch event into `table`; an object the engine cannot read is dropped, and said."""
    if kind == "DELETED":
        table.pop(key, None)
        return
    try:
        table[key] = parse(obj)
    except InvalidObject as err:
        log.warning("%s ignored: %s", what, err, extra={what: str(key)})
        table.pop(key, None)


def selected_endpoints(
    policy: Policy, label_sets: Counter[LabelSet], nodes: Mapping[str, Node]
) -> int:
    """Pods (and, for host policies, nodes) a policy's subjects select.

    Cost: parts × distinct pod label sets (pods of one Deployment share a set), not pods.
    """
    pod_subjects = [part.subject for part in policy.parts if part.subject is not None]
    node_subjects = [part.node_subject for part in policy.parts if part.node_subject is not None]
    count = 0
    if pod_subjects:
        for labels, pods in label_sets.items():
            if any(subject.matches(labels) for subject in pod_subjects):
                count += pods
    if node_subjects:
        for node in nodes.values():
            labels = node_labels(node)
            if any(subject.matches(labels) for subject in node_subjects):
                count += 1
    return count
