"""SeptumIdentity objects: how a label set and its number are written as a Kubernetes object.

Pure (no I/O): the operator writes these objects and the agents read them, and both must agree
on the encoding, so it lives here once. A SeptumIdentity is cluster-scoped; its name is the
identity number in decimal, `securityLabels` maps `source:key` to the value, and two labels
let a reader find an identity by its label set without listing them all:

- `septum.io/labels-hash`: the first 40 hex digits of the SHA-256 of the label set's canonical
  text (one `source:key=value` line per label, sorted, joined by newlines). A label value is
  at most 63 characters, the whole set far longer, so the set itself cannot be a label.
- `septum.io/namespace`: the pod namespace of the label set (for `kubectl get -l`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

GROUP = "septum.io"
VERSION = "v2"
KIND = "SeptumIdentity"
PLURAL = "septumidentities"
API_VERSION = f"{GROUP}/{VERSION}"
HASH_LABEL = "septum.io/labels-hash"
NAMESPACE_LABEL = "septum.io/namespace"
# Cilium's key for a pod label set's namespace, as the engine writes it (engine.labels).
_POD_NAMESPACE_KEY = "io.kubernetes.pod.namespace"


class InvalidIdentityObject(ValueError):
    """A SeptumIdentity object that does not describe one label set and one number."""


@dataclass(frozen=True, slots=True)
class StoredIdentity:
    """What one SeptumIdentity object says: its number and its label set."""

    number: int
    source: str
    labels: tuple[tuple[str, str], ...]  # sorted (key, value) pairs, without the source

    @property
    def hash(self) -> str:
        return labels_hash(self.source, self.labels)


def canonical_text(source: str, labels: Iterable[tuple[str, str]]) -> str:
    return "\n".join(sorted(f"{source}:{key}={value}" for key, value in labels))


def labels_hash(source: str, labels: Iterable[tuple[str, str]]) -> str:
    return hashlib.sha256(canonical_text(source, labels).encode()).hexdigest()[:40]


def identity_object(number: int, source: str, labels: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """The SeptumIdentity object for `number` and the label set (`source`, `labels`)."""
    pairs = sorted(labels)
    meta_labels = {HASH_LABEL: labels_hash(source, pairs)}
    namespace = dict(pairs).get(_POD_NAMESPACE_KEY)
    if namespace:
        meta_labels[NAMESPACE_LABEL] = namespace
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": str(number), "labels": meta_labels},
        "securityLabels": {f"{source}:{key}": value for key, value in pairs},
    }


def read_identity(obj: Mapping[str, Any]) -> StoredIdentity:
    """The number and label set of a SeptumIdentity object; raises InvalidIdentityObject."""
    name = str((obj.get("metadata") or {}).get("name", ""))
    if not name.isdigit():
        raise InvalidIdentityObject(f"metadata.name: {name!r} is not an identity number")
    raw = obj.get("securityLabels")
    if not isinstance(raw, Mapping) or not raw:
        raise InvalidIdentityObject(
            f"SeptumIdentity {name}: securityLabels: must be a non-empty map"
        )
    sources: set[str] = set()
    pairs: list[tuple[str, str]] = []
    for qualified, value in raw.items():
        source, colon, key = str(qualified).partition(":")
        if not colon or not source or not key:
            raise InvalidIdentityObject(
                f"SeptumIdentity {name}: securityLabels[{qualified!r}]: not 'source:key'"
            )
        sources.add(source)
        pairs.append((key, str(value)))
    if len(sources) != 1:
        raise InvalidIdentityObject(
            f"SeptumIdentity {name}: securityLabels: labels from several sources {sorted(sources)}"
        )
    return StoredIdentity(int(name), sources.pop(), tuple(sorted(pairs)))


class NumberCursor:
    """Picks the number for a new identity: the next one after the last handed out.

    Numbers go up and wrap to the lowest free one only at the end of the range, so a number
    freed by garbage collection is not handed out again soon (an agent that still holds
    the old number in its maps then drops nothing it should allow to a new workload).
    """

    def __init__(self, first: int, last: int) -> None:
        self.first = first
        self.last = last
        self._next = first

    def seen(self, number: int) -> None:
        """Note a number in use (a restart resumes after the highest one)."""
        if self.first <= number <= self.last and number >= self._next:
            self._next = number + 1

    def pick(self, used: Iterable[int] | set[int]) -> int | None:
        """A number not in `used`, or None when the range is full."""
        taken = used if isinstance(used, set) else set(used)
        span = self.last - self.first + 1
        candidate = self._next
        for _ in range(span):
            if candidate > self.last:
                candidate = self.first
            if candidate not in taken:
                self._next = candidate + 1
                return candidate
            candidate += 1
        return None
