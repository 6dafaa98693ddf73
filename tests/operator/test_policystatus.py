"""Policy status as the operator computes it: conditions, lastValid, patches, events."""

from __future__ import annotations

from typing import Any

from septum.operator import policystatus

T0 = "2026-12-01T00:00:00Z"
T1 = "2026-12-01T00:05:00Z"


def snp(port: int, generation: int = 1, status: dict[str, Any] | None = None) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "septum.io/v2",
        "kind": "SeptumNetworkPolicy",
        "metadata": {"name": "p", "namespace": "ns", "generation": generation, "uid": "u1"},
        "spec": {
            "endpointSelector": {"matchLabels": {"app": "web"}},
            "ingress": [{"toPorts": [{"ports": [{"port": str(port), "protocol": "TCP"}]}]}],
        },
    }
    if status is not None:
        obj["status"] = status
    return obj


def test_valid_policy_gets_valid_true_selected_and_last_valid() -> None:
    obj = snp(80)
    validation = policystatus.validate(obj)
    assert validation.valid
    status = policystatus.desired_status(obj, validation, 3, T0)
    (condition,) = status["conditions"]
    assert condition["type"] == "Valid" and condition["status"] == "True"
    assert condition["observedGeneration"] == 1 and condition["lastTransitionTime"] == T0
    assert status["selectedEndpoints"] == 3
    assert status["lastValid"] == {"generation": 1, "spec": obj["spec"], "specs": None}


def test_invalid_edit_names_the_field_path_and_keeps_last_valid() -> None:
    good = snp(80)
    first = policystatus.desired_status(good, policystatus.validate(good), 1, T0)
    bad = snp(70000, generation=2, status=first)
    validation = policystatus.validate(bad)
    assert not validation.valid
    assert "spec.ingress[0].toPorts[0].ports[0].port" in validation.message
    status = policystatus.desired_status(bad, validation, 1, T1)
    (condition,) = status["conditions"]
    assert (condition["status"], condition["reason"]) == ("False", "InvalidPolicy")
    assert condition["lastTransitionTime"] == T1
    assert status["lastValid"]["generation"] == 1
    assert status["lastValid"]["spec"] == good["spec"]
    # The version kept in force still parses (agents enforce it; it is what is counted).
    kept = policystatus.last_valid_policy({**bad, "status": status})
    assert kept is not None and kept.parts


def test_unchanged_status_needs_no_patch_and_keeps_transition_time() -> None:
    obj = snp(80)
    validation = policystatus.validate(obj)
    written = policystatus.desired_status(obj, validation, 2, T0)
    # What the API server stores has no nulls (the merge patch deleted them).
    stored = {**written, "lastValid": {"generation": 1, "spec": obj["spec"]}, "nodes": {"n1": {}}}
    again = policystatus.desired_status({**obj, "status": stored}, validation, 2, T1)
    assert again["conditions"][0]["lastTransitionTime"] == T0
    assert policystatus.status_patch(stored, again) is None
    moved = policystatus.desired_status({**obj, "status": stored}, validation, 5, T1)
    assert policystatus.status_patch(stored, moved) == {"status": {"selectedEndpoints": 5}}


def test_other_conditions_are_kept() -> None:
    other = {
        "type": "Other",
        "status": "True",
        "reason": "X",
        "message": "",
        "lastTransitionTime": T0,
    }
    obj = snp(80, status={"conditions": [other]})
    status = policystatus.desired_status(obj, policystatus.validate(obj), 0, T1)
    assert [c["type"] for c in status["conditions"]] == ["Other", "Valid"]


def test_event_is_due_once_per_invalid_version_and_named_deterministically() -> None:
    bad = snp(70000, generation=2)
    validation = policystatus.validate(bad)
    assert policystatus.became_invalid(bad, validation)
    reported = {**bad, "status": policystatus.desired_status(bad, validation, 0, T0)}
    assert not policystatus.became_invalid(reported, validation)
    first = policystatus.invalid_event(bad, validation, T0, "a")
    second = policystatus.invalid_event(bad, validation, T1, "b")
    assert first["metadata"] == second["metadata"]
    assert first["metadata"]["namespace"] == "ns"
    assert first["involvedObject"]["kind"] == "SeptumNetworkPolicy"
    assert (first["type"], first["reason"]) == ("Warning", "InvalidPolicy")
    assert "spec.ingress[0].toPorts[0].ports[0].port" in first["message"]
