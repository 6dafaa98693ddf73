"""A policy's status as the operator owns it: the Valid condition, selected endpoints, lastValid.

Pure: the reconciler reads the object, asks here what its status should be and what patch
gets it there, and writes the patch. Nothing changes when nothing changed: a condition keeps
its lastTransitionTime while its status holds, and an identical status yields no patch, so
a restarted operator does not touch a single policy (no flapping, no resourceVersion churn).

The agents own `status.nodes` (one key per node); the operator never writes it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from septum.operator.engine import InvalidPolicy, parse_policy
from septum.operator.engine.rules import Policy

VALID = "Valid"
REASON_VALID = "PolicyValid"
REASON_INVALID = "InvalidPolicy"
EVENT_REASON_INVALID = "InvalidPolicy"
COMPONENT = "septum-operator"
_MAX_MESSAGE = 32768  # metav1.Condition.message's bound


@dataclass(frozen=True, slots=True)
class Validation:
    """The engine's verdict on one version (generation) of a policy."""

    generation: int
    policy: Policy | None  # the parsed policy when valid
    message: str  # the errors, each `field.path: reason`, when invalid; warnings when valid

    @property
    def valid(self) -> bool:
        return self.policy is not None


def generation_of(obj: Mapping[str, Any]) -> int:
    return int((obj.get("metadata") or {}).get("generation") or 0)


def validate(obj: Mapping[str, Any]) -> Validation:
    generation = generation_of(obj)
    try:
        policy = parse_policy(obj)
    except InvalidPolicy as err:
        detail = "; ".join(f"{error.path}: {error.reason}" for error in err.errors)
        return Validation(generation, None, detail[:_MAX_MESSAGE])
    return Validation(generation, policy, "; ".join(policy.warnings)[:_MAX_MESSAGE])


def _last_valid_version(obj: Mapping[str, Any]) -> dict[str, Any] | None:
    """The object with its `status.lastValid` spec(s) in place of its own (unparsed)."""
    last = (obj.get("status") or {}).get("lastValid")
    if not isinstance(last, Mapping):
        return None
    version = {key: value for key, value in obj.items() if key not in ("spec", "specs")}
    for field in ("spec", "specs"):
        if last.get(field) is not None:
            version[field] = last[field]
    return version


def enforced_version(obj: Mapping[str, Any]) -> dict[str, Any] | None:
    """The version of a policy object that is in force: the object itself when its spec is
    valid, else the object with its `status.lastValid` spec(s), else None. The operator counts
    selected endpoints from it, the agents enforce it, the CLI explains with it."""
    try:
        parse_policy(obj)
        return dict(obj)
    except InvalidPolicy:
        pass
    version = _last_valid_version(obj)
    return version if version is not None and last_valid_policy(obj) is not None else None


def last_valid_policy(obj: Mapping[str, Any]) -> Policy | None:
    """The version `status.lastValid` keeps in force, parsed (None if there is none)."""
    version = _last_valid_version(obj)
    if version is None:
        return None
    try:
        return parse_policy(version)
    except InvalidPolicy:
        return None


def valid_condition(
    validation: Validation, current: Mapping[str, Any] | None, now: str
) -> dict[str, Any]:
    """The Valid condition; lastTransitionTime moves only when the status does."""
    status = "True" if validation.valid else "False"
    if validation.valid:
        message = "accepted by the policy engine"
        if validation.message:
            message += f" (warnings: {validation.message})"
    else:
        message = validation.message or "rejected by the policy engine"
    transition = now
    if current is not None and current.get("status") == status:
        transition = str(current.get("lastTransitionTime") or now)
    return {
        "type": VALID,
        "status": status,
        "observedGeneration": validation.generation,
        "lastTransitionTime": transition,
        "reason": REASON_VALID if validation.valid else REASON_INVALID,
        "message": message[:_MAX_MESSAGE],
    }


def with_condition(conditions: Any, condition: Mapping[str, Any]) -> list[dict[str, Any]]:
    """`conditions` with the one of the same type replaced (others kept, in order)."""
    out: list[dict[str, Any]] = []
    placed = False
    for item in conditions if isinstance(conditions, list) else []:
        if isinstance(item, Mapping) and item.get("type") == condition["type"]:
            if not placed:
                out.append(dict(condition))
                placed = True
            continue
        out.append(dict(item) if isinstance(item, Mapping) else item)
    if not placed:
        out.append(dict(condition))
    return out


def find_condition(status: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for item in status.get("conditions") or []:
        if isinstance(item, Mapping) and item.get("type") == kind:
            return item
    return None


def desired_status(
    obj: Mapping[str, Any], validation: Validation, selected: int, now: str
) -> dict[str, Any]:
    """The status fields the operator owns for a Septum policy: conditions, counts, lastValid."""
    current = obj.get("status") or {}
    condition = valid_condition(validation, find_condition(current, VALID), now)
    desired: dict[str, Any] = {
        "conditions": with_condition(current.get("conditions"), condition),
        "selectedEndpoints": selected,
    }
    if validation.valid:
        desired["lastValid"] = {
            "generation": validation.generation,
            "spec": obj.get("spec"),
            "specs": obj.get("specs"),
        }
    elif isinstance(current.get("lastValid"), Mapping):
        desired["lastValid"] = dict(current["lastValid"])
    return desired


def conditions_only(obj: Mapping[str, Any], validation: Validation, now: str) -> dict[str, Any]:
    """The status of a kind whose schema is upstream's (ClusterNetworkPolicy): conditions only."""
    current = obj.get("status") or {}
    condition = valid_condition(validation, find_condition(current, VALID), now)
    return {"conditions": with_condition(current.get("conditions"), condition)}


def _normalised(value: Any) -> Any:
    """Dicts without None values (the API server drops nulls a merge patch writes)."""
    if isinstance(value, Mapping):
        return {key: _normalised(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [_normalised(item) for item in value]
    return value


def status_patch(
    current: Mapping[str, Any] | None, desired: Mapping[str, Any]
) -> dict[str, Any] | None:
    """The merge patch taking `current` status to `desired`, or None when nothing differs.

    Only the fields in `desired` are compared and written, so `status.nodes` (the agents')
    is left alone. A None inside `desired` deletes that field (merge-patch semantics).
    """
    current = current or {}
    changed = {
        key: value
        for key, value in desired.items()
        if _normalised(current.get(key)) != _normalised(value)
    }
    return {"status": changed} if changed else None


def became_invalid(obj: Mapping[str, Any], validation: Validation) -> bool:
    """Whether the status does not yet report this invalid version (an Event is due)."""
    if validation.valid:
        return False
    current = find_condition(obj.get("status") or {}, VALID)
    return not (
        current is not None
        and current.get("status") == "False"
        and current.get("observedGeneration") == validation.generation
        and current.get("message") == validation.message
    )


def involved_object(obj: Mapping[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata") or {}
    ref = {
        "apiVersion": obj.get("apiVersion"),
        "kind": obj.get("kind"),
        "name": meta.get("name"),
        "uid": meta.get("uid"),
        "resourceVersion": meta.get("resourceVersion"),
    }
    if meta.get("namespace"):
        ref["namespace"] = meta["namespace"]
    return ref


def invalid_event(
    obj: Mapping[str, Any], validation: Validation, now: str, instance: str
) -> dict[str, Any]:
    """A core/v1 Event (Warning, InvalidPolicy) for one invalid version of a policy.

    Its name is derived from the policy's uid, generation and message: posting the same
    report twice (a restart, a second replica that was leader before) hits AlreadyExists
    instead of repeating it.
    """
    meta = obj.get("metadata") or {}
    digest = hashlib.sha256(
        f"{meta.get('uid')}\n{validation.generation}\n{validation.message}".encode()
    ).hexdigest()[:16]
    name = f"{str(meta.get('name', 'policy'))[:200]}.{digest}"
    has_last_valid = isinstance((obj.get("status") or {}).get("lastValid"), Mapping)
    kept = (
        "the last valid version stays in force"
        if has_last_valid
        else "nothing of this policy is enforced"
    )
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": name, "namespace": event_namespace(obj)},
        "involvedObject": involved_object(obj),
        "reason": EVENT_REASON_INVALID,
        "type": "Warning",
        "message": f"generation {validation.generation} rejected, {kept}: {validation.message}"[
            :1024
        ],
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": instance,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }


def event_namespace(obj: Mapping[str, Any]) -> str:
    """Events of cluster-scoped objects go to `default`, as kubectl and kopf post them."""
    return str((obj.get("metadata") or {}).get("namespace") or "default")
