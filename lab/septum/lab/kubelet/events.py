"""Kubernetes Events the lab kubelet records on pods (what ``kubectl describe pod`` shows)."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

from septum.lab.kubelet.api import ApiClient
from septum.lab.kubelet.objects import JSON
from septum.lab.kubelet.util import now_rfc3339

log = logging.getLogger("septum.lab.kubelet")

# A repeating event (a probe failing every second) is recorded at most this often.
_MIN_INTERVAL_S = 10.0


class Recorder:
    def __init__(self, api: ApiClient, node_name: str) -> None:
        self.api = api
        self.node_name = node_name
        self._last: dict[tuple[str, str, str], float] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def pod_event(
        self, pod: JSON, reason: str, message: str, *, warning: bool = False, field_path: str = ""
    ) -> None:
        meta = pod["metadata"]
        key = (meta["uid"], field_path, reason)
        now = time.monotonic()
        if now - self._last.get(key, -_MIN_INTERVAL_S) < _MIN_INTERVAL_S:
            return
        self._last[key] = now
        involved: JSON = {
            "apiVersion": "v1",
            "kind": "Pod",
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta["uid"],
        }
        if field_path:
            involved["fieldPath"] = field_path
        ts = now_rfc3339()
        body: JSON = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{meta['name']}.{uuid.uuid4().hex[:16]}",
                "namespace": meta["namespace"],
            },
            "involvedObject": involved,
            "reason": reason,
            "message": message,
            "type": "Warning" if warning else "Normal",
            "source": {"component": "kubelet", "host": self.node_name},
            "reportingComponent": "kubelet",
            "reportingInstance": self.node_name,
            "firstTimestamp": ts,
            "lastTimestamp": ts,
            "eventTime": None,
            "count": 1,
        }
        task = asyncio.create_task(self._send(meta["namespace"], body))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, namespace: str, body: JSON) -> None:
        try:
            await self.api.create(f"/api/v1/namespaces/{namespace}/events", body)
        except Exception as err:  # events are best effort, as in the kubelet
            log.debug("event %s: %s", body["reason"], err)
