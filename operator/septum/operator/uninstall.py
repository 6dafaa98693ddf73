"""Uninstall: what the operator removes when its Deployment is gone.

Every replica that gets SIGTERM with its Deployment (`--owner-deployment`) gone or being
deleted runs this after its own reconciler has stopped, leader or not: deletions of what
another replica deleted first are 404s and are fine, and the replica that stops last
removes whatever an earlier one's successor wrote meanwhile (a new leader may allocate an
identity, or take the Lease, in between).

Kubernetes API calls, with the operator's service account: LIST and DELETE
septum.io/v2 septumidentities (cluster-scoped); DELETE coordination.k8s.io/v1 leases
<namespace>/septum-operator.
"""

from __future__ import annotations

import logging

from kubernetes_asyncio.client import CoordinationV1Api, CustomObjectsApi
from kubernetes_asyncio.client.exceptions import ApiException

from septum.operator.identity.objects import GROUP, PLURAL, VERSION

log = logging.getLogger(__name__)


async def delete_identities(api: CustomObjectsApi) -> list[str]:
    """Delete every SeptumIdentity; returns the names deleted (none when the CRD is gone)."""
    try:
        listing = await api.list_cluster_custom_object(GROUP, VERSION, PLURAL)
    except ApiException as err:
        if err.status == 404:
            return []
        raise
    deleted: list[str] = []
    for item in listing.get("items") or []:
        name = str((item.get("metadata") or {}).get("name", ""))
        try:
            await api.delete_cluster_custom_object(GROUP, VERSION, PLURAL, name)
        except ApiException as err:
            if err.status != 404:
                raise
            continue
        deleted.append(name)
    return deleted


async def delete_lease(api: CoordinationV1Api, namespace: str, name: str) -> bool:
    """Delete the leader-election Lease; False when it was not there."""
    try:
        await api.delete_namespaced_lease(name, namespace)
    except ApiException as err:
        if err.status == 404:
            return False
        raise
    return True
