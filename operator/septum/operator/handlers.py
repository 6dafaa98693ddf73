"""The kopf handlers: watch events into the cluster view; login with Septum's own kubeconfig.

Thin on purpose: event handlers only record what they see and wake the reconciler; they
never write. They run in every replica (followers keep their view warm); only the leader's
reconciler acts. `on.event` handlers keep kopf from writing anything of its own to the
watched objects (no progress annotations, no finalizers: pods stay untouched).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import kopf

from septum.operator.cache import POLICY_RESOURCES, ClusterCache, Resource
from septum.operator.identities import IdentityStore
from septum.operator.identity import objects as identity_objects


def _object(event: Mapping[str, Any]) -> Mapping[str, Any]:
    obj = event.get("object")
    return obj if isinstance(obj, Mapping) else {}


def build_registry(
    cache: ClusterCache,
    identities: IdentityStore,
    credentials: Callable[[], Awaitable[kopf.ConnectionInfo]],
    started: asyncio.Event,
) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    async def login(**_: Any) -> kopf.ConnectionInfo:
        # asked again after a 401: built afresh, so a rotated token is picked up
        return await credentials()

    @kopf.on.startup(registry=registry)
    def startup(**_: Any) -> None:
        started.set()

    @kopf.on.event("", "v1", "pods", registry=registry)
    def pod(event: Mapping[str, Any], **_: Any) -> None:
        cache.pod_event(event.get("type"), _object(event))

    @kopf.on.event("", "v1", "namespaces", registry=registry)
    def namespace(event: Mapping[str, Any], **_: Any) -> None:
        cache.namespace_event(event.get("type"), _object(event))

    @kopf.on.event("", "v1", "nodes", registry=registry)
    def node(event: Mapping[str, Any], **_: Any) -> None:
        cache.node_event(event.get("type"), _object(event))

    @kopf.on.event(
        identity_objects.GROUP,
        identity_objects.VERSION,
        identity_objects.PLURAL,
        registry=registry,
    )
    def identity(event: Mapping[str, Any], **_: Any) -> None:
        identities.observe(event.get("type"), _object(event))

    for resource in POLICY_RESOURCES:
        kopf.on.event(*resource, id=resource[2], registry=registry)(
            _policy_handler(cache, resource)
        )
    return registry


def _policy_handler(cache: ClusterCache, resource: Resource) -> Callable[..., None]:
    def policy(event: Mapping[str, Any], **_: Any) -> None:
        cache.policy_event(resource, event.get("type"), _object(event))

    return policy
