"""What a pod's status says, worked out from what the kubelet knows; no I/O, no clock.

Container states (``waiting``/``running``/``terminated``), whether a container restarts, how
long a stopping one is given, the pod's phase and its conditions follow the kubelet's rules for
the fields ``kubectl`` and the e2e tests read. The caller passes the time (RFC 3339) wherever a
timestamp is recorded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from septum.lab.kubelet.objects import JSON


class ContainerView(Protocol):
    """The facts about one container that the pod's phase and conditions depend on."""

    @property
    def name(self) -> str: ...

    @property
    def ready(self) -> bool: ...

    @property
    def ever_started(self) -> bool: ...

    @property
    def state(self) -> JSON: ...

    @property
    def exit_code(self) -> int | None: ...


def restarts(restart_policy: str, exit_code: int) -> bool:
    """Whether a container that exited with ``exit_code`` is started again."""
    return restart_policy == "Always" or (restart_policy == "OnFailure" and exit_code != 0)


# The kubelet never gives a container less between SIGTERM and SIGKILL (a forced deletion, grace
# period 0, still gets these).
MINIMUM_GRACE_PERIOD_S = 2.0
DEFAULT_GRACE_PERIOD_S = 30.0


def grace_period_s(pod: JSON) -> float:
    """Seconds between SIGTERM and SIGKILL for the containers of a pod being stopped: the
    deletion's grace period when the pod is being deleted, else its
    terminationGracePeriodSeconds."""
    grace = pod.get("metadata", {}).get("deletionGracePeriodSeconds")
    if grace is None:
        grace = pod.get("spec", {}).get("terminationGracePeriodSeconds")
    if grace is None:
        grace = DEFAULT_GRACE_PERIOD_S
    return max(float(grace), MINIMUM_GRACE_PERIOD_S)


def terminated(exit_code: int, started_at: str, finished_at: str) -> JSON:
    """The ``terminated`` state of a process that exited; a negative code is the killing signal.

    Runtimes report death by signal N as exit code 128 + N, with the signal alongside.
    """
    state: JSON = {
        "exitCode": exit_code if exit_code >= 0 else 128 - exit_code,
        "reason": "Completed" if exit_code == 0 else "Error",
        "startedAt": started_at,
        "finishedAt": finished_at,
    }
    if exit_code < 0:
        state["signal"] = -exit_code
    return state


def phase(
    restart_policy: str,
    sandbox_ready: bool,
    initialized: bool,
    containers: Sequence[ContainerView],
) -> str:
    """The pod's phase: Pending, Running, Succeeded or Failed.

    A pod is Pending until its sandbox is up, its init containers have all succeeded and each
    app container has started once. After that, containers that will be restarted keep it
    Running; it ends Succeeded or Failed only when every container has exited for good.
    """
    if not sandbox_ready or not initialized:
        return "Pending"
    if any(not c.ever_started for c in containers):
        return "Pending"
    if any("running" in c.state for c in containers):
        return "Running"
    if all("terminated" in c.state for c in containers):
        if all(c.exit_code == 0 for c in containers):
            return "Running" if restart_policy == "Always" else "Succeeded"
        return "Failed" if restart_policy == "Never" else "Running"
    # Some container waits to be restarted (back-off).
    return "Running"


class Conditions:
    """The pod's conditions, each with the time its status last changed.

    Kubernetes keeps ``lastTransitionTime`` until the status flips, so the times outlive a
    single status report: one ``Conditions`` lives as long as the pod's worker.
    """

    def __init__(self) -> None:
        self._since: dict[str, tuple[str, str]] = {}  # type -> (status, lastTransitionTime)

    def condition(self, kind: str, ok: bool, now: str, reason: str = "") -> JSON:
        """Condition ``kind``; ``reason`` is given only while it is False."""
        status = "True" if ok else "False"
        previous = self._since.get(kind)
        if previous is None or previous[0] != status:
            self._since[kind] = (status, now)
        cond: JSON = {
            "type": kind,
            "status": status,
            "lastTransitionTime": self._since[kind][1],
            "lastProbeTime": None,
        }
        if reason and not ok:
            cond["reason"] = reason
        return cond

    def of_pod(
        self,
        sandbox_ready: bool,
        initialized: bool,
        containers: Sequence[ContainerView],
        reported: Sequence[JSON],
        now: str,
    ) -> list[JSON]:
        """The kubelet's four conditions, then PodScheduled as the scheduler ``reported`` it."""
        ready = initialized and all(c.ready for c in containers)
        not_ready = "ContainersNotReady" if any(not c.ready for c in containers) else ""
        conditions = [
            self.condition("PodReadyToStartContainers", sandbox_ready, now),
            self.condition("Initialized", initialized, now, "ContainersNotInitialized"),
            self.condition("ContainersReady", ready, now, not_ready),
            self.condition("Ready", ready, now, not_ready),
        ]
        # The scheduler owns PodScheduled; a merge patch replaces the whole list, so it is
        # carried along unchanged.
        conditions += [c for c in reported if c.get("type") == "PodScheduled"]
        return conditions
