"""Label selectors: parsed from Kubernetes/Cilium shape, matched against label sets.

One `Selector` type serves every policy kind; the parsers translate each kind's
keys (pod labels, namespace labels, Cilium source prefixes) into requirements on
identity label keys, so matching never needs to know where a selector came from.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any

from septum.operator.engine.errors import PolicyError
from septum.operator.engine.labels import (
    KNOWN_SOURCES,
    NAMESPACE_KEY,
    NAMESPACE_LABELS_PREFIX,
    OWN_LABEL_PREFIX,
    SOURCE_ANY,
    SOURCE_K8S,
    SOURCE_POD_LABEL,
    LabelSet,
    is_added_key,
)
from septum.operator.engine.paths import (
    expect_list,
    expect_mapping,
    expect_str,
    field,
    index,
    reject_unknown,
)


class Operator(enum.Enum):
    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


@dataclass(frozen=True, slots=True)
class Requirement:
    """One condition on one label key; `source` None matches a label of any source."""

    key: str
    operator: Operator
    values: frozenset[str] = frozenset()
    source: str | None = None
    # On the pod's own label (an upstream-API podSelector): a label the filter keeps out of
    # identities is read from the pod's split class (labels.OWN_LABEL_PREFIX).
    own: bool = False

    def matches(self, labels: LabelSet) -> bool:
        if self.source is not None and labels.source != self.source:
            # A label of another source does not exist for this requirement.
            return self.operator in (Operator.NOT_IN, Operator.DOES_NOT_EXIST)
        value = labels.get(self.key)
        if value is None and self.own:
            value = labels.get(OWN_LABEL_PREFIX + self.key)
        if self.operator is Operator.IN:
            return value is not None and value in self.values
        if self.operator is Operator.NOT_IN:
            return value is None or value not in self.values
        if self.operator is Operator.EXISTS:
            return value is not None
        return value is None

    def read_keys(self) -> tuple[str, ...]:
        """The identity label keys this requirement reads."""
        return (self.key, OWN_LABEL_PREFIX + self.key) if self.own else (self.key,)

    def __str__(self) -> str:
        key = f"{self.source}:{self.key}" if self.source else self.key
        if self.operator is Operator.IN and len(self.values) == 1:
            return f"{key}={next(iter(self.values))}"
        if self.operator in (Operator.EXISTS, Operator.DOES_NOT_EXIST):
            return f"{key} {self.operator.value}"
        return f"{key} {self.operator.value} ({','.join(sorted(self.values))})"


@dataclass(frozen=True, slots=True)
class Selector:
    """All requirements must hold; `sources` limits which identity sources can match.

    An empty requirement tuple with sources {k8s} selects every pod identity.
    """

    requirements: tuple[Requirement, ...]
    sources: frozenset[str] = frozenset({SOURCE_K8S})
    _hash: list[int] = dc_field(default_factory=list, compare=False, repr=False)

    def __hash__(self) -> int:
        # Selectors key the selector cache: hash once, not on every lookup.
        if not self._hash:
            self._hash.append(hash((self.requirements, self.sources)))
        return self._hash[0]

    def matches(self, labels: LabelSet) -> bool:
        if labels.source not in self.sources:
            return False
        return all(requirement.matches(labels) for requirement in self.requirements)

    def index_alternatives(self) -> list[tuple[tuple[str, str], ...]]:
        """Per `In` requirement, the (key, value) pairs one of which every match carries
        (none for a requirement on a label no identity carries: nothing can match)."""
        return [
            ()
            if requirement.source == SOURCE_POD_LABEL
            else tuple(
                (key, value)
                for key in requirement.read_keys()
                for value in sorted(requirement.values)
            )
            for requirement in self.requirements
            if requirement.operator is Operator.IN
        ]

    def namespaces(self) -> frozenset[str] | None:
        """The namespaces this selector is confined to, if it names them."""
        for requirement in self.requirements:
            if (
                requirement.key == NAMESPACE_KEY
                and requirement.operator is Operator.IN
                and requirement.source != SOURCE_POD_LABEL
            ):
                return requirement.values
        return None

    def __str__(self) -> str:
        if not self.requirements:
            return (
                "{}"
                if self.sources == frozenset({SOURCE_K8S})
                else f"{{any {','.join(sorted(self.sources))}}}"
            )
        return "{" + ", ".join(str(r) for r in self.requirements) + "}"


def _parse_values(raw: Any, path: str) -> frozenset[str]:
    if raw is None:
        return frozenset()
    items = expect_list(raw, path)
    return frozenset(expect_str(item, index(path, i)) for i, item in enumerate(items))


def _validate_key(key: str, path: str) -> None:
    if not key or len(key) > 317 or any(c.isspace() for c in key):
        raise PolicyError(path, f"invalid label key {key!r}")


KeyMapper = Any  # Callable[[str, str], tuple[str, str | None]]: (raw key, path) -> (key, source)


def parse_label_selector(
    raw: Any,
    path: str,
    key_mapper: KeyMapper,
    own: bool = False,
) -> tuple[Requirement, ...]:
    """Parse `matchLabels` + `matchExpressions`; `key_mapper` turns a raw key into (key, source).

    `own`: the selector reads the pod's own labels (an upstream-API podSelector), filtered
    ones included (`Requirement.own`)."""
    obj = expect_mapping(raw if raw is not None else {}, path)
    reject_unknown(obj, {"matchLabels", "matchExpressions"}, path)
    requirements: list[Requirement] = []
    match_labels = obj.get("matchLabels") or {}
    labels_path = field(path, "matchLabels")
    for raw_key, raw_value in expect_mapping(match_labels, labels_path).items():
        key_path = field(labels_path, str(raw_key))
        raw_key = expect_str(raw_key, key_path)
        _validate_key(raw_key, key_path)
        value = expect_str(raw_value if raw_value is not None else "", key_path)
        key, source = key_mapper(raw_key, key_path)
        requirements.append(
            Requirement(key, Operator.IN, frozenset({value}), source, own and source == SOURCE_K8S)
        )
    expressions_path = field(path, "matchExpressions")
    for i, raw_expr in enumerate(expect_list(obj.get("matchExpressions") or [], expressions_path)):
        expr_path = index(expressions_path, i)
        expr = expect_mapping(raw_expr, expr_path)
        reject_unknown(expr, {"key", "operator", "values"}, expr_path)
        raw_key = expect_str(expr.get("key"), field(expr_path, "key"))
        _validate_key(raw_key, field(expr_path, "key"))
        op_path = field(expr_path, "operator")
        op_name = expect_str(expr.get("operator"), op_path)
        try:
            operator = Operator(op_name)
        except ValueError:
            raise PolicyError(
                op_path,
                f"unknown operator {op_name!r} (expected In, NotIn, Exists or DoesNotExist)",
            ) from None
        values = _parse_values(expr.get("values"), field(expr_path, "values"))
        if operator in (Operator.IN, Operator.NOT_IN) and not values:
            raise PolicyError(
                field(expr_path, "values"), f"operator {op_name} needs at least one value"
            )
        if operator in (Operator.EXISTS, Operator.DOES_NOT_EXIST) and values:
            raise PolicyError(field(expr_path, "values"), f"operator {op_name} takes no values")
        key, source = key_mapper(raw_key, field(expr_path, "key"))
        requirements.append(
            Requirement(key, operator, values, source, own and source == SOURCE_K8S)
        )
    return tuple(sorted(requirements, key=str))


def pod_key(raw_key: str, path: str) -> tuple[str, str | None]:
    """NetworkPolicy / admin-tier pod selector keys are plain pod label keys.

    A podSelector sees only the pod's own labels (the upstream API): a key under which
    Septum adds the namespace, its labels, the service account or the cluster to the
    identity is read as the pod's own label of that key, which no identity carries.
    """
    return raw_key, SOURCE_POD_LABEL if is_added_key(raw_key) else SOURCE_K8S


def namespace_key(raw_key: str, path: str) -> tuple[str, str | None]:
    """Namespace selector keys become Cilium's namespace-label keys on the pod's identity."""
    return NAMESPACE_LABELS_PREFIX + raw_key, SOURCE_K8S


def cilium_key(raw_key: str, path: str) -> tuple[str, str | None]:
    """Cilium keys may carry a source prefix (`k8s:`, `any:`, `reserved:`, `cidr:`)."""
    source, sep, rest = raw_key.partition(":")
    if sep and source in KNOWN_SOURCES:
        return rest, None if source == SOURCE_ANY else source
    return raw_key, None


def node_key(raw_key: str, path: str) -> tuple[str, str | None]:
    return raw_key, "node"


def in_namespace(requirements: tuple[Requirement, ...], namespace: str) -> tuple[Requirement, ...]:
    extra = Requirement(NAMESPACE_KEY, Operator.IN, frozenset({namespace}), SOURCE_K8S)
    return tuple(sorted((*requirements, extra), key=str))


def names_namespace(requirements: tuple[Requirement, ...]) -> bool:
    return any(r.key == NAMESPACE_KEY for r in requirements)


def match_labels_selector(labels: Mapping[str, str], source: str = SOURCE_K8S) -> Selector:
    """A selector from a plain label map (tests and hypothetical endpoints)."""
    reqs = tuple(
        sorted(
            (Requirement(k, Operator.IN, frozenset({v}), source) for k, v in labels.items()),
            key=str,
        )
    )
    return Selector(reqs, frozenset({source}))
