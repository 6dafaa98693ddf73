"""`helm uninstall`'s pre-delete hook: stop the agents, then the operator, while RBAC exists.

Helm deletes a release's objects all at once: the agents' and operator's Roles and
ServiceAccount go in the same breath as their DaemonSet and Deployment, so by the time a pod
gets SIGTERM it can no longer read its owner (403) and, on the safe side, keeps everything
(pins, CNI chaining, identities). This hook runs first (Helm waits for it): it deletes the
agents' DaemonSet in the foreground and waits until it is gone — every agent has then found
its owner being deleted and removed what it made on its node, with its RBAC intact — then the
operator's Deployment the same way (the identities go after the agents that used them). Helm
then deletes the rest. Both steps tolerate a workload already gone.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Final

from kubernetes_asyncio.client import ApiClient
from kubernetes_asyncio.client.exceptions import ApiException

from septum.operator.errors import OperatorError
from septum.operator.owner import Owner

log = logging.getLogger("septum.uninstall")

POLL_S: Final = 1.0


class UninstallTimeout(OperatorError):
    """A workload's pods did not finish stopping in time (its name says which)."""


@dataclass(frozen=True)
class HookPlan:
    """The workloads to stop, in order, and how long each may take."""

    owners: tuple[Owner, ...]
    timeout_s: float = 120.0


async def _call(api: ApiClient, method: str, path: str, body: object = None) -> int:
    """One request; its HTTP status (a 404 is an answer, not an error)."""
    try:
        response = await api.call_api(
            path, method, body=body,
            header_params={"Accept": "application/json", "Content-Type": "application/json"},
            auth_settings=["BearerToken"], _preload_content=False, _request_timeout=30,
        )  # fmt: skip
    except ApiException as err:
        if err.status == 404:
            return 404
        raise OperatorError(f"{method} {path}: {err.status} {err.reason}") from err
    status = int(response.status)
    text = await response.text()
    response.release()
    if status >= 400 and status != 404:
        raise OperatorError(f"{method} {path}: {status} {text[:300]}")
    return status


async def stop(api: ApiClient, owner: Owner, timeout_s: float) -> None:
    """Delete `owner` in the foreground and wait until it is gone (its pods stopped)."""
    body = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Foreground"}
    status = await _call(api, "DELETE", owner.path, body)
    if status == 404:
        log.info("%s: already gone", owner)
        return
    log.info("%s: deleting (foreground); waiting for its pods to stop", owner)
    deadline = time.monotonic() + timeout_s
    while await _call(api, "GET", owner.path) != 404:
        if time.monotonic() >= deadline:
            raise UninstallTimeout(f"{owner}: still there after {timeout_s:.0f}s")
        await asyncio.sleep(POLL_S)
    log.info("%s: gone", owner)


async def run(api: ApiClient, plan: HookPlan) -> None:
    for owner in plan.owners:
        await stop(api, owner, plan.timeout_s)
