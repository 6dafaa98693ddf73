"""Security-relevant label sets: what identities are made of and selectors match.

An identity's labels all come from one *source*: `k8s` (pods), `reserved`
(host, world, ...) or `cidr` (prefixes named by policies). Pod label sets also
carry the namespace, its labels and the service account under Cilium's key
names, so a Cilium policy's selectors keep their meaning unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

SOURCE_K8S = "k8s"
SOURCE_RESERVED = "reserved"
SOURCE_CIDR = "cidr"
# Selector key prefixes: `k8s:app` matches only pod labels, `any:app` and a bare
# `app` match any source, `reserved:host` only reserved identities.
SOURCE_ANY = "any"
KNOWN_SOURCES = frozenset({SOURCE_K8S, SOURCE_RESERVED, SOURCE_CIDR, SOURCE_ANY})
# The source of a requirement on a pod's *own* label whose key Septum reserves for what it
# adds to identities (namespace, its labels, service account, cluster). No identity has
# this source, so the requirement sees the label as absent: a Kubernetes podSelector sees
# only the pod's own labels, and Septum never keeps a pod's own label under these keys.
SOURCE_POD_LABEL = "pod-label"

NAMESPACE_KEY = "io.kubernetes.pod.namespace"
NAMESPACE_LABELS_PREFIX = "io.cilium.k8s.namespace.labels."
SERVICE_ACCOUNT_KEY = "io.cilium.k8s.policy.serviceaccount"
CLUSTER_KEY = "io.cilium.k8s.policy.cluster"
# A pod may set any label it likes; these keys describe facts only the API
# server knows, so pod-supplied values for them are dropped, never trusted.
UNTRUSTED_POD_KEY_PREFIXES = (
    "io.kubernetes.pod.",
    "io.cilium.k8s.namespace.labels.",
    "io.cilium.k8s.policy.",
)


# A filtered-out pod label that an upstream-API selector (NetworkPolicy, the admin tiers)
# names, kept on the pod's split class under this prefix (`podclass`): such a selector reads
# the pod's own labels, filtered or not, while Cilium-shaped selectors keep Cilium's rule
# that a filtered label is not there. Under `io.kubernetes.pod.`, so a pod cannot forge it.
OWN_LABEL_PREFIX = "io.kubernetes.pod.label."


def is_added_key(key: str) -> bool:
    """Whether `key` is one Septum adds to a pod's identity itself (never the pod's own)."""
    return key.startswith(UNTRUSTED_POD_KEY_PREFIXES)


# Labels that change per pod but say nothing about security: keeping them would
# give every pod of a Deployment its own identity.
DEFAULT_EXCLUDED_KEYS = frozenset(
    {
        "pod-template-hash",
        "controller-revision-hash",
        "pod-template-generation",
        "statefulset.kubernetes.io/pod-name",
        "apps.kubernetes.io/pod-index",
        "batch.kubernetes.io/controller-uid",
        "controller-uid",
    }
)


# Filtered keys that stay out of every identity even when a policy selects on them: they
# change with every rollout, so splitting a workload by them would renumber its pods at each
# one (docs/policy-semantics.md: what a selector on them gets).
ROLLOUT_KEYS = frozenset(
    {"pod-template-hash", "controller-revision-hash", "pod-template-generation"}
)


@dataclass(frozen=True, slots=True)
class LabelFilter:
    """Which pod label keys count for identity (keeps the identity count down)."""

    excluded_keys: frozenset[str] = DEFAULT_EXCLUDED_KEYS
    excluded_prefixes: tuple[str, ...] = ()
    # When set, only these keys (plus the namespace/service-account keys) count.
    included_keys: frozenset[str] | None = None

    def keeps(self, key: str) -> bool:
        if key in self.excluded_keys or key.startswith(self.excluded_prefixes):
            return False
        return self.included_keys is None or key in self.included_keys

    def own_selectable(self, key: str) -> bool:
        """Whether an upstream-API selector on pod label `key` needs the pod's own value
        carried on its class: the filter drops the key, and it is not a rollout key."""
        return not is_added_key(key) and not self.keeps(key) and key not in ROLLOUT_KEYS


@dataclass(frozen=True, slots=True)
class LabelSet:
    """An immutable set of labels from one source; hashable, usable as a dict key."""

    source: str
    items: tuple[tuple[str, str], ...]
    _lookup: dict[str, str] = field(default_factory=dict, compare=False, hash=False, repr=False)

    @staticmethod
    def of(source: str, labels: Mapping[str, str] | Iterable[tuple[str, str]]) -> LabelSet:
        pairs = labels.items() if isinstance(labels, Mapping) else labels
        items = tuple(sorted(pairs))
        return LabelSet(source, items, dict(items))

    def get(self, key: str) -> str | None:
        return self._lookup.get(key)

    def has(self, key: str) -> bool:
        return key in self._lookup

    @property
    def namespace(self) -> str | None:
        return self._lookup.get(NAMESPACE_KEY) if self.source == SOURCE_K8S else None

    def as_dict(self) -> dict[str, str]:
        return dict(self.items)

    def __str__(self) -> str:
        return ",".join(
            f"{self.source}:{k}={v}" if v else f"{self.source}:{k}" for k, v in self.items
        )


def pod_label_set(
    namespace: str,
    pod_labels: Mapping[str, str],
    namespace_labels: Mapping[str, str],
    service_account: str,
    cluster: str,
    label_filter: LabelFilter,
) -> LabelSet:
    """The security-relevant labels of a pod: its own, its namespace's, its service account."""
    labels: dict[str, str] = {}
    for key, value in pod_labels.items():
        if key.startswith(UNTRUSTED_POD_KEY_PREFIXES) or not label_filter.keeps(key):
            continue
        labels[key] = value
    for key, value in namespace_labels.items():
        labels[NAMESPACE_LABELS_PREFIX + key] = value
    labels[NAMESPACE_KEY] = namespace
    labels[SERVICE_ACCOUNT_KEY] = service_account
    labels[CLUSTER_KEY] = cluster
    return LabelSet.of(SOURCE_K8S, labels)
