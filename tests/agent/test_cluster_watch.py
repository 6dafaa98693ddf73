"""ResourceWatch's view of the API server: a kind it does not serve is no loss of reach."""

from __future__ import annotations

import asyncio
from typing import Any

from kubernetes_asyncio.client.exceptions import ApiException

from septum.agent import cluster


class NotServing:
    """An API client whose server answers every call with one status (a real server's 404
    for a CRD that is not installed, or a 500)."""

    def __init__(self, status: int) -> None:
        self.status = status

    async def call_api(self, *args: Any, **kwargs: Any) -> Any:
        raise ApiException(status=self.status, reason="test")


async def _states(status: int) -> list[tuple[str, bool]]:
    seen: list[tuple[str, bool]] = []
    queue: asyncio.Queue[Any] = asyncio.Queue()
    watch = cluster.ResourceWatch(
        NotServing(status),  # type: ignore[arg-type]
        cluster.CLUSTER_NETWORK_POLICIES,
        queue,
        on_state=lambda kind, ok: seen.append((kind, ok)),
    )
    task = asyncio.create_task(watch.run())
    try:
        for _ in range(200):
            if seen:
                break
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
    return seen


async def test_a_kind_not_served_keeps_the_api_reachable() -> None:
    assert (await _states(404))[0] == ("ClusterNetworkPolicy", True)


async def test_a_server_error_is_a_loss_of_reach() -> None:
    assert (await _states(500))[0] == ("ClusterNetworkPolicy", False)
