"""PodWorker's wiring to the API, without a cluster: what it fetches for a container's env and
what its status patch carries. Pod lifecycles run against a real lab in tests/lab/test_lab_e2e.py.
"""

from __future__ import annotations

import base64
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from septum.lab.kubelet.api import ApiError
from septum.lab.kubelet.pod import PodWorker

JSON = dict[str, Any]


class FakeApi:
    """Serves GETs from a dict of paths; any other path is a 404."""

    def __init__(self, objects: dict[str, JSON]) -> None:
        self.objects = objects
        self.paths: list[str] = []

    async def get(self, path: str, params: dict[str, str] | None = None) -> JSON:
        self.paths.append(path)
        if path not in self.objects:
            raise ApiError(404, f"{path} not found")
        return self.objects[path]


def make_worker(tmp_path: Path, api: FakeApi, **spec: Any) -> PodWorker:
    kubelet = SimpleNamespace(
        api=api,
        node=SimpleNamespace(name="node-1", ip="172.30.0.2", netns="node-1"),
        node_dir=tmp_path,
    )
    pod = {
        "metadata": {"name": "web", "namespace": "shop", "uid": "u-1"},
        "spec": {"containers": [{"name": "app"}], **spec},
        "status": {"conditions": [{"type": "PodScheduled", "status": "True"}]},
    }
    return PodWorker(kubelet, pod)  # type: ignore[arg-type]  # the fake has what is used


async def test_env_fetches_each_referenced_object_once(tmp_path: Path) -> None:
    ns = "/api/v1/namespaces/shop"
    api = FakeApi(
        {
            f"{ns}/services": {"items": []},
            f"{ns}/configmaps/cm": {"data": {"k": "v", "MODE": "fast"}},
            f"{ns}/secrets/s": {"data": {"pw": base64.b64encode(b"hunter2").decode()}},
        }
    )
    worker = make_worker(tmp_path, api)
    worker.ip = "10.1.0.7"
    container = {
        "name": "app",
        "envFrom": [{"configMapRef": {"name": "cm"}}],
        "env": [
            {"name": "A", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}},
            {"name": "B", "valueFrom": {"secretKeyRef": {"name": "s", "key": "pw"}}},
            {"name": "C", "valueFrom": {"configMapKeyRef": {"name": "gone", "key": "k"}}},
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "HOST", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
        ],
    }
    env = await worker.env_for(container)
    assert (env["MODE"], env["A"], env["B"], env["C"]) == ("fast", "v", "hunter2", "")
    assert (env["IP"], env["HOST"]) == ("10.1.0.7", "172.30.0.2")
    assert sorted(api.paths) == [
        f"{ns}/configmaps/cm",
        f"{ns}/configmaps/gone",
        f"{ns}/secrets/s",
        f"{ns}/services",
    ]


async def test_no_service_lookup_without_service_links(tmp_path: Path) -> None:
    api = FakeApi({})
    env = await make_worker(tmp_path, api, enableServiceLinks=False).env_for({"name": "app"})
    assert api.paths == []
    assert env["HOSTNAME"] == "web"


async def test_status_of_a_pod_waiting_for_its_sandbox(tmp_path: Path) -> None:
    worker = make_worker(tmp_path, FakeApi({}), restartPolicy="Never")
    status = worker.status()
    assert status["phase"] == "Pending"
    assert [c["type"] for c in status["conditions"]][-1] == "PodScheduled"
    assert status["containerStatuses"][0]["state"] == {"waiting": {"reason": "ContainerCreating"}}
    assert (status["message"], status["reason"]) == (None, None)
    worker.sandbox_error = "CNI ADD failed"
    assert worker.status()["reason"] == "SandboxFailed"


async def test_status_is_reported_again_when_another_writer_changed_it(tmp_path: Path) -> None:
    """The node controller marks a pod not ready while the node's lease lapses; the kubelet
    must report its own conditions again once it sees that (or the pod stays not ready)."""
    import asyncio

    class PatchingApi(FakeApi):
        def __init__(self) -> None:
            super().__init__({})
            self.patches: list[JSON] = []

        async def merge_patch(self, path: str, body: JSON) -> JSON:
            self.patches.append(body)
            return body

    api = PatchingApi()
    worker = make_worker(tmp_path, api)  # type: ignore[arg-type]
    task = asyncio.create_task(worker._status_loop())
    try:
        worker.changed()
        for _ in range(100):
            if api.patches:
                break
            await asyncio.sleep(0.01)
        assert len(api.patches) == 1
        ours = api.patches[0]["status"]["conditions"]
        worker.observed({"conditions": ours})  # the server agrees: nothing to send
        await asyncio.sleep(0.2)
        assert len(api.patches) == 1
        flipped = {"True": "False", "False": "True"}
        overwritten = [{**c, "status": flipped[c["status"]]} for c in ours]
        worker.observed({"conditions": overwritten})
        for _ in range(100):
            if len(api.patches) == 2:
                break
            await asyncio.sleep(0.01)
        assert api.patches[1]["status"]["conditions"] == ours
    finally:
        task.cancel()
