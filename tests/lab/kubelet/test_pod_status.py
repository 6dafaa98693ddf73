"""Pod phase, conditions and container states as the lab kubelet reports them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from septum.lab.kubelet.pod_status import Conditions, grace_period_s, phase, restarts, terminated

JSON = dict[str, Any]
T0, T1 = "2026-01-01T00:00:00Z", "2026-01-01T00:00:05Z"


@dataclass
class FakeContainer:
    name: str = "app"
    ready: bool = False
    ever_started: bool = False
    state: JSON = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    exit_code: int | None = None


def running(ready: bool = True) -> FakeContainer:
    return FakeContainer(ready=ready, ever_started=True, state={"running": {"startedAt": T0}})


def exited(code: int) -> FakeContainer:
    return FakeContainer(
        ever_started=True, state={"terminated": terminated(code, T0, T1)}, exit_code=code
    )


def backing_off() -> FakeContainer:
    return FakeContainer(ever_started=True, state={"waiting": {"reason": "CrashLoopBackOff"}})


# --- restarts and terminated states ---------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "code", "expected"),
    [
        ("Always", 0, True),
        ("Always", 1, True),
        ("OnFailure", 0, False),
        ("OnFailure", 2, True),
        ("OnFailure", -9, True),
        ("Never", 0, False),
        ("Never", 1, False),
    ],
)
def test_restarts_by_policy(policy: str, code: int, expected: bool) -> None:
    assert restarts(policy, code) is expected


@pytest.mark.parametrize(
    ("metadata", "spec", "expected"),
    [
        ({}, {}, 30.0),  # Kubernetes' default
        ({}, {"terminationGracePeriodSeconds": 45}, 45.0),
        ({"deletionGracePeriodSeconds": 7}, {"terminationGracePeriodSeconds": 45}, 7.0),
        # a forced deletion (0) is not "unset": the kubelet's minimum, not the spec's 45
        ({"deletionGracePeriodSeconds": 0}, {"terminationGracePeriodSeconds": 45}, 2.0),
        ({}, {"terminationGracePeriodSeconds": 1}, 2.0),
    ],
)
def test_grace_period(metadata: dict[str, Any], spec: dict[str, Any], expected: float) -> None:
    assert grace_period_s({"metadata": metadata, "spec": spec}) == expected


def test_terminated_states() -> None:
    assert terminated(0, T0, T1) == {
        "exitCode": 0,
        "reason": "Completed",
        "startedAt": T0,
        "finishedAt": T1,
    }
    assert terminated(3, T0, T1)["reason"] == "Error"
    killed = terminated(-9, T0, T1)  # asyncio's returncode for death by SIGKILL
    assert (killed["exitCode"], killed["signal"], killed["reason"]) == (137, 9, "Error")


# --- phase ----------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["Always", "OnFailure", "Never"])
def test_pending_until_sandbox_init_containers_and_first_start(policy: str) -> None:
    assert phase(policy, False, True, [running()]) == "Pending"
    assert phase(policy, True, False, [running()]) == "Pending"  # init containers not done
    assert phase(policy, True, True, [running(), FakeContainer()]) == "Pending"
    assert phase(policy, True, True, [running(), exited(0)]) == "Running"


@pytest.mark.parametrize(
    ("policy", "codes", "expected"),
    [
        ("Always", [0, 0], "Running"),  # they are restarted
        ("Always", [0, 1], "Running"),
        ("OnFailure", [0, 0], "Succeeded"),
        ("OnFailure", [0, 1], "Running"),  # the failed one is restarted
        ("Never", [0, 0], "Succeeded"),
        ("Never", [0, 1], "Failed"),
        ("Never", [0, -9], "Failed"),
    ],
)
def test_phase_once_every_container_exited(policy: str, codes: list[int], expected: str) -> None:
    assert phase(policy, True, True, [exited(code) for code in codes]) == expected


def test_a_container_in_back_off_keeps_the_pod_running() -> None:
    assert phase("Always", True, True, [backing_off()]) == "Running"
    assert phase("OnFailure", True, True, [exited(0), backing_off()]) == "Running"


# --- conditions -----------------------------------------------------------------------------


def by_type(conditions: list[JSON]) -> dict[str, JSON]:
    return {c["type"]: c for c in conditions}


def test_conditions_of_a_pod_still_initializing() -> None:
    conditions = Conditions().of_pod(True, False, [FakeContainer()], [], T0)
    assert [c["type"] for c in conditions] == [
        "PodReadyToStartContainers",
        "Initialized",
        "ContainersReady",
        "Ready",
    ]
    got = by_type(conditions)
    assert got["PodReadyToStartContainers"]["status"] == "True"
    assert "reason" not in got["PodReadyToStartContainers"]
    assert (got["Initialized"]["status"], got["Initialized"]["reason"]) == (
        "False",
        "ContainersNotInitialized",
    )
    for kind in ("ContainersReady", "Ready"):
        assert (got[kind]["status"], got[kind]["reason"]) == ("False", "ContainersNotReady")
    assert all(c["lastProbeTime"] is None and c["lastTransitionTime"] == T0 for c in conditions)


def test_ready_needs_init_done_and_every_container_ready() -> None:
    conditions = Conditions()
    got = by_type(conditions.of_pod(True, True, [running(), running(ready=False)], [], T0))
    assert got["Ready"]["status"] == "False"
    got = by_type(conditions.of_pod(True, True, [running(), running()], [], T0))
    assert (got["Ready"]["status"], got["ContainersReady"]["status"]) == ("True", "True")
    assert "reason" not in got["Ready"]


def test_sandbox_not_ready() -> None:
    got = by_type(Conditions().of_pod(False, True, [FakeContainer()], [], T0))
    assert got["PodReadyToStartContainers"]["status"] == "False"


def test_transition_time_changes_only_when_the_status_does() -> None:
    conditions = Conditions()
    conditions.of_pod(True, True, [running(ready=False)], [], T0)
    got = by_type(conditions.of_pod(True, True, [running(ready=False)], [], T1))
    assert got["Ready"]["lastTransitionTime"] == T0
    got = by_type(conditions.of_pod(True, True, [running()], [], T1))
    assert got["Ready"]["lastTransitionTime"] == T1
    assert got["Initialized"]["lastTransitionTime"] == T0


def test_pod_scheduled_is_carried_over_as_reported() -> None:
    scheduled = {"type": "PodScheduled", "status": "True", "lastTransitionTime": "earlier"}
    reported = [scheduled, {"type": "Ready", "status": "True"}]
    conditions = Conditions().of_pod(True, True, [running()], reported, T0)
    assert conditions[-1] == scheduled
    assert [c["type"] for c in conditions].count("Ready") == 1
