"""What the agent reports in the API: SeptumEndpoint and SeptumNode status, and each
enforced policy's status.nodes[<node>].

Every report is a merge patch of what changed since the last one (per object), on the
status subresource; keys are disjoint per node, so agents never overwrite each other.
The CRDs may not be installed yet: a 404 is remembered and retried at the next report.
"""

from __future__ import annotations

import datetime
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from septum.agent.cluster import checked
from septum.agent.facts import EndpointFacts

log = logging.getLogger(__name__)

GROUP: Final = "septum.io"
VERSION: Final = "v2"
POLICY_PATHS: Final = {
    "NetworkPolicy": ("networking.k8s.io", "v1", "networkpolicies"),
    "SeptumNetworkPolicy": (GROUP, VERSION, "septumnetworkpolicies"),
    "SeptumClusterwideNetworkPolicy": (GROUP, VERSION, "septumclusterwidenetworkpolicies"),
    "ClusterNetworkPolicy": ("policy.networking.k8s.io", "v1alpha2", "clusternetworkpolicies"),
}


# A map this full gets a Warning Event "MapNearLimit" on the Node (once per crossing).
MAP_NEAR_LIMIT: Final = 0.9


@dataclass
class MapLimitWatch:
    """Which maps passed `threshold` of their capacity since the last look: each crossing
    is reported once, and again only after the map went back under the threshold."""

    threshold: float = MAP_NEAR_LIMIT
    above: set[str] = field(default_factory=set)

    def crossed(self, maps: Mapping[str, tuple[int, int]]) -> list[tuple[str, int, int]]:
        """(name, entries, capacity) of the maps that passed the threshold since last time."""
        found: list[tuple[str, int, int]] = []
        for name, (entries, capacity) in sorted(maps.items()):
            if capacity > 0 and entries > self.threshold * capacity:
                if name not in self.above:
                    self.above.add(name)
                    found.append((name, entries, capacity))
            else:
                self.above.discard(name)
        return found


def map_near_limit_event(
    node: str, node_uid: str, name: str, entries: int, capacity: int, when: str
) -> dict[str, Any]:
    """The core/v1 Warning Event on the Node for a map past the threshold."""
    percent = 100 * entries // capacity
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{node}.septum-map-", "namespace": "default"},
        "involvedObject": {"apiVersion": "v1", "kind": "Node", "name": node, "uid": node_uid},
        "reason": "MapNearLimit",
        "type": "Warning",
        "message": (
            f"datapath map {name} holds {entries} of {capacity} entries ({percent} %); "
            "raise its capacity before it fills (new entries are refused when full)"
        ),
        "source": {"component": "septum-agent", "host": node},
        "reportingComponent": "septum-agent",
        "reportingInstance": node,
        "firstTimestamp": when,
        "lastTimestamp": when,
        "count": 1,
    }


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def endpoint_status(facts: EndpointFacts) -> dict[str, Any]:
    addressing = [{"ipv4": ip} if ":" not in ip else {"ipv6": ip} for ip in facts.ips]
    return {
        "endpointID": facts.endpoint_id,
        "identity": {"id": facts.identity, "labels": list(facts.identity_labels)},
        "networking": {"node": facts.node, "addressing": addressing},
        "policy": {
            "ingressEnforced": facts.ingress_enforced,
            "egressEnforced": facts.egress_enforced,
            "audit": facts.audit,
            "realizedRevision": facts.revision,
        },
        "state": facts.state,
    }


def _path(group: str, version: str, plural: str, namespace: str, name: str) -> str:
    base = f"/api/{version}" if not group else f"/apis/{group}/{version}"
    where = f"/namespaces/{namespace}" if namespace else ""
    return f"{base}{where}/{plural}/{name}"


class StatusWriter:
    def __init__(self, api: client.ApiClient, node: str) -> None:
        self.api = api
        self.node = node
        self._sent: dict[str, Any] = {}  # object path -> last status sent
        # policy path -> (uid, generation) reported enforcing: a policy deleted and made
        # again under the same name is a new object (a new uid) and is reported again
        self._enforcing: dict[str, tuple[str, int]] = {}
        self.map_limits = MapLimitWatch()

    async def _call(
        self, method: str, path: str, body: Any, content_type: str = "application/json"
    ) -> None:
        response = await self.api.call_api(
            path,
            method,
            body=body,
            header_params={"Content-Type": content_type, "Accept": "application/json"},
            auth_settings=["BearerToken"],
            _preload_content=False,
        )
        await checked(response)
        response.release()

    async def _patch_status(self, path: str, status: dict[str, Any]) -> bool:
        """Merge-patch `status` if it differs from what was last sent; False on 404."""
        if self._sent.get(path) == status:
            return True
        try:
            await self._call(
                "PATCH",
                path + "/status",
                {"status": status},
                "application/merge-patch+json",
            )
        except ApiException as err:
            if err.status == 404:
                return False
            raise
        self._sent[path] = json.loads(json.dumps(status))
        return True

    async def endpoints(self, facts: Iterable[EndpointFacts]) -> None:
        for item in facts:
            path = _path(GROUP, VERSION, "septumendpoints", item.namespace, item.name)
            status = endpoint_status(item)
            if self._sent.get(path) == status:
                continue
            if not await self._patch_status(path, status):
                body = {
                    "apiVersion": f"{GROUP}/{VERSION}",
                    "kind": "SeptumEndpoint",
                    "metadata": {"name": item.name, "namespace": item.namespace},
                }
                if item.pod_uid:
                    body["metadata"]["ownerReferences"] = [  # type: ignore[index]
                        {"apiVersion": "v1", "kind": "Pod", "name": item.name,
                         "uid": item.pod_uid, "blockOwnerDeletion": False}
                    ]  # fmt: skip
                try:
                    await self._call("POST", path.rsplit("/", 1)[0], body)
                except ApiException as err:
                    if err.status == 404:
                        continue  # the CRD is not installed
                    if err.status != 409:
                        raise
                await self._patch_status(path, status)

    async def node_status(
        self, ready: bool, policy_revision: int, maps: dict[str, tuple[int, int]], version: str
    ) -> None:
        path = _path(GROUP, VERSION, "septumnodes", "", self.node)
        status = {
            "agent": {"ready": ready, "version": version, "lastHeartbeat": now()},
            "policyRevision": policy_revision,
            "maps": {name: {"entries": e, "capacity": c} for name, (e, c) in maps.items()},
        }
        if not await self._patch_status(path, status):
            body = {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "SeptumNode",
                "metadata": {"name": self.node},
            }
            try:
                await self._call("POST", path.rsplit("/", 1)[0], body)
            except ApiException as err:
                if err.status not in (404, 409):
                    raise
                if err.status == 404:
                    return
            await self._patch_status(path, status)

    async def policies(self, enforced: Iterable[tuple[str, str, str, int, str]]) -> None:
        """status.nodes[<node>] of every policy this agent enforces ({revision: the
        generation realized, enforcing: true}); a policy it stopped enforcing (invalid
        with no last valid version, refused) gets enforcing: false, a deleted one is
        forgotten."""
        current: dict[str, tuple[str, str, int, str]] = {}
        for kind, namespace, name, generation, uid in enforced:
            where = POLICY_PATHS.get(kind)
            if where is not None:
                current[_path(*where, namespace, name)] = (kind, name, generation, uid)
        for path, (kind, name, generation, uid) in current.items():
            if self._enforcing.get(path) == (uid, generation):
                continue
            entry = {"revision": generation, "enforcing": True, "lastUpdated": now()}
            if await self._policy_status(path, kind, name, entry) is not None:
                self._enforcing[path] = (uid, generation)
        for path in [p for p in self._enforcing if p not in current]:
            plural, name = path.rsplit("/", 2)[-2:]
            entry = {"enforcing": False, "lastUpdated": now()}
            if await self._policy_status(path, plural, name, entry) is not None:
                del self._enforcing[path]  # written, or the policy is gone

    async def _policy_status(self, path: str, kind: str, name: str, entry: Any) -> bool | None:
        """Merge-patch status.nodes[<node>]: True when written, False when the object (or
        its status subresource) is not there, None on another error (try again)."""
        try:
            return await self._patch_status(path, {"nodes": {self.node: entry}})
        except ApiException as err:
            log.info("policy status %s %s: %s", kind, name, err.reason)
            return None

    async def map_events(self, maps: Mapping[str, tuple[int, int]]) -> None:
        """A Warning Event "MapNearLimit" on the Node for each map that passed 90 %."""
        crossed = self.map_limits.crossed(maps)
        if not crossed:
            return
        node_uid = ""
        try:
            response = await self.api.call_api(
                f"/api/v1/nodes/{self.node}", "GET", header_params={"Accept": "application/json"},
                auth_settings=["BearerToken"], _preload_content=False,
            )  # fmt: skip
            await checked(response)
            body = await response.read()
            response.release()
            node_uid = str((json.loads(body or b"{}").get("metadata") or {}).get("uid") or "")
        except ApiException as err:
            log.info("node %s: %s", self.node, err.reason)
        for name, entries, capacity in crossed:
            event = map_near_limit_event(self.node, node_uid, name, entries, capacity, now())
            log.warning(event["message"], extra={"fields": {"map": name, "entries": entries}})
            try:
                await self._call("POST", "/api/v1/namespaces/default/events", event)
            except ApiException as err:
                self.map_limits.above.discard(name)  # try again at the next report
                log.info("MapNearLimit event: %s", err.reason)
