"""Watching the API server: each resource listed, then watched, forever.

A `ResourceWatch` keeps the last list of one resource and turns lists and watch events
into `ClusterEvent`s on one queue (the daemon's single consumer applies them in order).
It never gives up: a failed list or watch is retried with back-off while the agent keeps
enforcing what it last knew; a relist after an outage reports only what changed
(objects gone meanwhile as deletions).  A resource whose API is not served (a CRD not
installed yet) is retried too, slowly, and counts as synced (empty) meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

log = logging.getLogger(__name__)

EventType = Literal["upsert", "delete"]
BACKOFF_INITIAL_S: Final = 0.5
BACKOFF_MAX_S: Final = 10.0
# A watch asks the API server to end it after this long, and the client gives up 15 s later:
# a connection that went silent (a partition, not a refusal) is found within ~75 s and the
# watch resumes from its resourceVersion (no relist), instead of hanging for minutes.
WATCH_TIMEOUT_S: Final = 60
WATCH_CLIENT_GRACE_S: Final = 15
NOT_SERVED_RETRY_S: Final = 10.0
Obj = dict[str, Any]


@dataclass(frozen=True)
class Resource:
    """One watched resource: `kind` is what the compiler dispatches on."""

    kind: str
    group: str = ""  # "" for the core API
    version: str = "v1"
    plural: str = ""
    # the objects' own `kind` (lists of custom objects carry it per item; core lists don't)
    object_kind: str = ""


NAMESPACES = Resource("Namespace", plural="namespaces", object_kind="Namespace")
PODS = Resource("Pod", plural="pods", object_kind="Pod")
NODES = Resource("Node", plural="nodes", object_kind="Node")
NETWORK_POLICIES = Resource(
    "NetworkPolicy", "networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy"
)
SEPTUM_POLICIES = Resource(
    "SeptumNetworkPolicy", "septum.io", "v2", "septumnetworkpolicies", "SeptumNetworkPolicy"
)
SEPTUM_CLUSTERWIDE = Resource(
    "SeptumClusterwideNetworkPolicy",
    "septum.io",
    "v2",
    "septumclusterwidenetworkpolicies",
    "SeptumClusterwideNetworkPolicy",
)
CLUSTER_NETWORK_POLICIES = Resource(
    "ClusterNetworkPolicy",
    "policy.networking.k8s.io",
    "v1alpha2",
    "clusternetworkpolicies",
    "ClusterNetworkPolicy",
)
IDENTITIES = Resource("SeptumIdentity", "septum.io", "v2", "septumidentities", "SeptumIdentity")
# Services and their EndpointSlices: egress to a frontend is decided by its backends
# (septum.agent.services).
SERVICES = Resource("Service", plural="services", object_kind="Service")
ENDPOINT_SLICES = Resource(
    "EndpointSlice", "discovery.k8s.io", "v1", "endpointslices", "EndpointSlice"
)
ALL_RESOURCES: Final = (
    NAMESPACES,
    NODES,
    IDENTITIES,
    PODS,
    NETWORK_POLICIES,
    SEPTUM_POLICIES,
    SEPTUM_CLUSTERWIDE,
    CLUSTER_NETWORK_POLICIES,
    SERVICES,
    ENDPOINT_SLICES,
)


@dataclass(frozen=True)
class ClusterEvent:
    resource: Resource
    type: EventType
    obj: Obj


@dataclass(frozen=True)
class Synced:
    """The first complete list of `resource` has been queued."""

    resource: Resource


QueueItem = ClusterEvent | Synced


async def checked(response: Any) -> Any:
    """`response`, or ApiException when its status is not 2xx (a raw response, asked for
    with _preload_content=False, is not checked by the client)."""
    if not 200 <= response.status <= 299:
        body = await response.read()
        response.release()
        raise ApiException(status=response.status, reason=body.decode(errors="replace")[:300])
    return response


def object_key(obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


def relist_events(
    resource: Resource, known: Mapping[tuple[str, str], Obj], listed: list[Obj]
) -> list[ClusterEvent]:
    """What a fresh list means against what was known: upserts of new or changed objects,
    deletions of objects no longer there."""
    events: list[ClusterEvent] = []
    seen: set[tuple[str, str]] = set()
    for obj in listed:
        key = object_key(obj)
        seen.add(key)
        old = known.get(key)
        if old is None or _version(old) != _version(obj):
            events.append(ClusterEvent(resource, "upsert", obj))
    for key, old in known.items():
        if key not in seen:
            events.append(ClusterEvent(resource, "delete", old))
    return events


def _version(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion", ""))


class ResourceWatch:
    """List-then-watch of one resource, forever, feeding `queue`."""

    def __init__(
        self,
        api: client.ApiClient,
        resource: Resource,
        queue: asyncio.Queue[QueueItem | None],
        field_selector: str | None = None,
        on_state: Callable[[str, bool], None] | None = None,
    ) -> None:
        self.api = api
        self.resource = resource
        self.queue = queue
        self.field_selector = field_selector
        self.known: dict[tuple[str, str], Obj] = {}
        self.synced = False
        self._on_state = on_state or (lambda _kind, _ok: None)

    def _path(self) -> str:
        r = self.resource
        base = f"/api/{r.version}" if not r.group else f"/apis/{r.group}/{r.version}"
        return f"{base}/{r.plural}"

    async def _get(self, query: list[tuple[str, Any]]) -> Any:
        response = await self.api.call_api(
            self._path(),
            "GET",
            query_params=query,
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
            _preload_content=False,
        )
        return await checked(response)

    async def _list(self) -> tuple[list[Obj], str]:
        query: list[tuple[str, Any]] = []
        if self.field_selector:
            query.append(("fieldSelector", self.field_selector))
        response = await self._get(query)
        body = json.loads(await response.read())
        items: list[Obj] = body.get("items") or []
        for item in items:
            item.setdefault("kind", self.resource.object_kind)
            if self.resource.group:
                item.setdefault("apiVersion", f"{self.resource.group}/{self.resource.version}")
            else:
                item.setdefault("apiVersion", self.resource.version)
        return items, str((body.get("metadata") or {}).get("resourceVersion", ""))

    async def _watch_call(self, **kwargs: Any) -> Any:
        query: list[tuple[str, Any]] = [("watch", "true")]
        for name, value in kwargs.items():
            if name in ("_preload_content", "watch"):
                continue
            query.append((_CAMEL.get(name, name), value))
        if self.field_selector:
            query.append(("fieldSelector", self.field_selector))
        return await self.api.call_api(
            self._path(),
            "GET",
            query_params=query,
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
            _preload_content=False,
            _request_timeout=WATCH_TIMEOUT_S + WATCH_CLIENT_GRACE_S,
        )

    async def run(self) -> None:
        backoff = BACKOFF_INITIAL_S
        while True:
            try:
                version = await self._relist()
                self._on_state(self.resource.kind, True)
                backoff = BACKOFF_INITIAL_S
                await self._watch(version)
            except asyncio.CancelledError:
                raise
            except ApiException as err:
                if err.status == 410:  # the watch's version expired: relist now
                    continue
                if err.status in (404, 403):
                    # not served (a CRD not installed): synced as empty, retried slowly. The API
                    # server answered, so this is no loss of reachability (readyz says so).
                    self._on_state(self.resource.kind, True)
                    if not self.synced:
                        log.info(
                            "watch: %s not served (%s); retrying every %.0fs",
                            self.resource.kind,
                            err.status,
                            NOT_SERVED_RETRY_S,
                        )
                        self.synced = True
                        await self.queue.put(Synced(self.resource))
                    await asyncio.sleep(NOT_SERVED_RETRY_S)
                    continue
                self._on_state(self.resource.kind, False)
                log.warning("watch %s: %s", self.resource.kind, err.reason)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)
            except Exception as err:  # noqa: BLE001 - unreachable API server: retry forever
                self._on_state(self.resource.kind, False)
                log.warning("watch %s: %r; retrying in %.1fs", self.resource.kind, err, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)

    async def _relist(self) -> str:
        items, version = await self._list()
        for event in relist_events(self.resource, self.known, items):
            self._remember(event)
            await self.queue.put(event)
        if not self.synced:
            self.synced = True
            await self.queue.put(Synced(self.resource))
        return version

    def _remember(self, event: ClusterEvent) -> None:
        key = object_key(event.obj)
        if event.type == "delete":
            self.known.pop(key, None)
        else:
            self.known[key] = event.obj

    async def _watch(self, version: str) -> None:
        """Watch from `version` until the stream ends or expires (the caller relists)."""
        while True:
            stream = watch.Watch()
            async with stream.stream(
                self._watch_call,
                resource_version=version,
                timeout_seconds=WATCH_TIMEOUT_S,
                allow_watch_bookmarks=True,
            ) as events:
                async for raw in events:
                    kind = raw.get("type")
                    obj = raw.get("raw_object") or {}
                    if kind == "ERROR":
                        log.info("watch %s: %s; relisting", self.resource.kind, obj.get("message"))
                        return
                    new_version = str((obj.get("metadata") or {}).get("resourceVersion", ""))
                    if new_version:
                        version = new_version
                    if kind == "BOOKMARK":
                        continue
                    obj.setdefault("kind", self.resource.object_kind)
                    event = ClusterEvent(
                        self.resource, "delete" if kind == "DELETED" else "upsert", obj
                    )
                    self._remember(event)
                    await self.queue.put(event)


_CAMEL: Final = {
    "resource_version": "resourceVersion",
    "timeout_seconds": "timeoutSeconds",
    "allow_watch_bookmarks": "allowWatchBookmarks",
}


async def load_api_client(kubeconfig: str | None) -> client.ApiClient:
    """An API client from `kubeconfig`, else the in-cluster service account."""
    from kubernetes_asyncio import config

    if kubeconfig:
        await config.load_kube_config(config_file=kubeconfig)
    else:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    return client.ApiClient()


Handler = Callable[[QueueItem], Awaitable[None]]
