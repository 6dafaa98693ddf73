"""What the agent reports: MapNearLimit Events (threshold logic), policy status.nodes
(enforcing and no longer enforcing), all through a recording fake of the API client."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from septum.agent.status import MapLimitWatch, StatusWriter, map_near_limit_event


class FakeResponse:
    def __init__(self, status: int, body: Any = None) -> None:
        self.status = status
        self._body = json.dumps(body or {}).encode()

    async def read(self) -> bytes:
        return self._body

    def release(self) -> None:
        pass


class FakeApi:
    """Records every call; GET of the node answers with a uid, everything else 200."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any]] = []

    async def call_api(self, path: str, method: str, **kwargs: Any) -> FakeResponse:
        self.calls.append((method, path, kwargs.get("body")))
        if method == "GET":
            return FakeResponse(200, {"metadata": {"name": "n1", "uid": "node-uid"}})
        return FakeResponse(200)


def test_a_map_is_reported_once_per_crossing_of_90_percent() -> None:
    watch = MapLimitWatch()
    assert watch.crossed({"policy": (900, 1000), "ipcache": (10, 100)}) == []  # 90 % is not past
    assert watch.crossed({"policy": (901, 1000), "ipcache": (10, 100)}) == [("policy", 901, 1000)]
    assert watch.crossed({"policy": (950, 1000)}) == []  # still above: not again
    assert watch.crossed({"policy": (100, 1000)}) == []  # back under: re-armed
    assert watch.crossed({"policy": (1000, 1000), "empty": (0, 0)}) == [("policy", 1000, 1000)]


def test_the_event_is_a_warning_on_the_node() -> None:
    event = map_near_limit_event("n1", "uid-1", "policy", 950, 1000, "2026-12-05T20:00:00Z")
    assert event["type"] == "Warning" and event["reason"] == "MapNearLimit"
    assert event["involvedObject"] == {
        "apiVersion": "v1",
        "kind": "Node",
        "name": "n1",
        "uid": "uid-1",
    }
    assert "policy" in event["message"] and "95 %" in event["message"]


def test_map_events_post_one_event_per_crossing() -> None:
    api = FakeApi()
    writer = StatusWriter(api, "n1")  # type: ignore[arg-type]
    asyncio.run(writer.map_events({"policy": (10, 16), "endpoints": (1, 16)}))
    asyncio.run(writer.map_events({"policy": (16, 16), "endpoints": (1, 16)}))
    asyncio.run(writer.map_events({"policy": (16, 16), "endpoints": (1, 16)}))
    posts = [body for method, path, body in api.calls if method == "POST"]
    assert len(posts) == 1
    assert posts[0]["involvedObject"]["uid"] == "node-uid"
    assert posts[0]["reason"] == "MapNearLimit" and "policy" in posts[0]["message"]


def test_policy_status_nodes_enforcing_then_not() -> None:
    api = FakeApi()
    writer = StatusWriter(api, "n1")  # type: ignore[arg-type]
    policy = ("SeptumNetworkPolicy", "ns", "p", 3, "uid-1")
    asyncio.run(writer.policies([policy]))
    asyncio.run(writer.policies([policy]))  # unchanged: nothing written
    asyncio.run(writer.policies([(*policy[:3], 4, "uid-1")]))
    asyncio.run(writer.policies([]))  # no longer enforced here
    asyncio.run(writer.policies([]))  # said once
    asyncio.run(writer.policies([(*policy[:3], 4, "uid-2")]))  # made again: a new object
    patches = [(path, body) for method, path, body in api.calls if method == "PATCH"]
    path = "/apis/septum.io/v2/namespaces/ns/septumnetworkpolicies/p/status"
    assert [p for p, _ in patches] == [path] * 4
    entries = [body["status"]["nodes"]["n1"] for _, body in patches]
    assert [(e.get("revision"), e["enforcing"]) for e in entries] == [
        (3, True),
        (4, True),
        (None, False),
        (4, True),
    ]
    assert all(e["lastUpdated"] for e in entries)
