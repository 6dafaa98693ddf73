"""Uninstall: what the agent removes when its DaemonSet is gone, and how it tells.

A restart must never open a window, so on SIGTERM the agent keeps its pins, links,
conflist and plugin (the datapath keeps enforcing while it is away). Only when its
DaemonSet (`--owner-daemonset`) is gone or being deleted is the SIGTERM an uninstall, and
then the node is left as Septum found it. The datapath side (detaching, unpinning) is
`LocalEndpoints.teardown`, the CNI side `cni.uninstall`; this module decides, and removes
the API objects and directories that are the node's own.

Kubernetes API calls, with the agent's service account:
- GET apps/v1 daemonsets/<owner> in its namespace on SIGTERM (again while the answer is
  unknown, for up to 15 s);
- on uninstall, DELETE septum.io/v2 septumendpoints of the node's own pods (by the agent's
  endpoint records: no cluster-wide list, which thousands of agents uninstalling at once
  would each make) and DELETE septum.io/v2 septumnodes/<node>. The SeptumEndpoint of a pod
  deleted while no agent ran goes with its pod (its ownerReference).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Final

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from septum.agent.cluster import checked

# Owner re-exported: the daemon's options name one without importing the operator package
from septum.operator.owner import Owner as Owner
from septum.operator.owner import OwnerState, settled_owner_state

log = logging.getLogger(__name__)

GROUP_PATH: Final = "/apis/septum.io/v2"
REQUEST_TIMEOUT_S: Final = 10.0


async def owner_gone(api: client.ApiClient, owner: Owner) -> bool:
    """Whether this SIGTERM is an uninstall: the owner is gone or being deleted. Unknown
    (the API server unreachable, no permission, asked again for a while) is no: enforcement
    stays."""
    state, reason, attempts = await settled_owner_state(api, owner)
    if state is OwnerState.GONE:
        log.info("owner %s gone (%s): uninstalling from this node", owner, reason)
        return True
    if state is OwnerState.UNKNOWN:
        log.warning(
            "owner %s cannot be read (%s, %d tries): keeping everything, the datapath keeps "
            "enforcing",
            owner,
            reason,
            attempts,
        )
    else:
        log.info("owner %s %s: a restart, the datapath keeps enforcing", owner, reason)
    return False


async def _delete(api: client.ApiClient, path: str) -> bool:
    """DELETE; False when it was not there (or its CRD is gone)."""
    try:
        response = await api.call_api(
            path,
            "DELETE",
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
            _preload_content=False,
            _request_timeout=REQUEST_TIMEOUT_S,
        )
        await checked(response)
        response.release()
    except ApiException as err:
        if err.status == 404:
            return False
        raise
    return True


async def delete_node_objects(
    api: client.ApiClient, node: str, endpoints: Iterable[tuple[str, str]]
) -> list[str]:
    """Delete the SeptumEndpoints of `endpoints` (namespace, pod name) and the node's
    SeptumNode; returns what was deleted. One refusal does not stop the others (logged)."""
    paths = [
        (f"SeptumEndpoint {namespace}/{name}",
         f"{GROUP_PATH}/namespaces/{namespace}/septumendpoints/{name}")
        for namespace, name in sorted(set(endpoints))
    ]  # fmt: skip
    paths.append((f"SeptumNode {node}", f"{GROUP_PATH}/septumnodes/{node}"))
    deleted: list[str] = []
    for what, path in paths:
        try:
            if await _delete(api, path):
                deleted.append(what)
        except ApiException as err:
            log.warning("uninstall: %s not deleted: %s %s", what, err.status, err.reason)
    return deleted


def remove_directories(directories: Iterable[Path]) -> list[str]:
    """Remove each directory with what it holds, then its parent when that is left empty
    (the chart's hostPath made it); returns what was removed."""
    removed: list[str] = []
    for directory in directories:
        if not directory.exists():
            continue
        shutil.rmtree(directory)
        removed.append(str(directory))
        try:
            directory.parent.rmdir()
        except OSError:
            continue  # not empty: another node's (the lab) or not ours
        removed.append(str(directory.parent))
    return removed
