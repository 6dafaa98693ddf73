"""Telling an uninstall from a restart: the owner workload's state, and where this pod runs."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from aiohttp import web
from kubernetes_asyncio.client import ApiClient, Configuration

from septum.operator.kube import pod_namespace
from septum.operator.owner import Owner, OwnerState, owner_state, settled_owner_state, state_of


def test_gone_being_deleted_present_and_unknown() -> None:
    assert state_of(404, b"{}")[0] is OwnerState.GONE
    deleting = b'{"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}}'
    assert state_of(200, deleting) == (
        OwnerState.GONE,
        "being deleted since 2026-01-01T00:00:00Z",
    )
    assert state_of(200, b'{"metadata": {"name": "septum"}}')[0] is OwnerState.PRESENT
    # no permission or a server error decides nothing: the callers keep everything
    assert state_of(403, b"forbidden")[0] is OwnerState.UNKNOWN
    assert state_of(503, b"")[0] is OwnerState.UNKNOWN
    assert state_of(200, b"not json")[0] is OwnerState.UNKNOWN


def test_the_flag_value_is_namespace_slash_name() -> None:
    owner = Owner.parse("deployments", "kube-system/septum-operator")
    assert owner.path == "/apis/apps/v1/namespaces/kube-system/deployments/septum-operator"
    for bad in ("septum", "/x", "x/", "a/b/c"):
        with pytest.raises(ValueError, match="NAMESPACE/NAME"):
            Owner.parse("deployments", bad)


async def test_an_unreachable_api_server_is_unknown() -> None:
    with socket.socket() as sock:  # a port nothing listens on: connection refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    configuration = Configuration(host=f"https://127.0.0.1:{port}")
    async with ApiClient(configuration) as api:
        state, reason = await owner_state(api, Owner("daemonsets", "s", "agent"), timeout_s=2)
    assert state is OwnerState.UNKNOWN, reason


def test_the_namespace_comes_from_the_pod(tmp_path: Path) -> None:
    namespace_file = tmp_path / "namespace"
    assert pod_namespace({"POD_NAMESPACE": "septum"}, namespace_file) == "septum"
    assert pod_namespace({}, namespace_file) == "kube-system"  # outside a pod
    namespace_file.write_text("from-the-service-account\n")
    assert pod_namespace({}, namespace_file) == "from-the-service-account"
    assert pod_namespace({"POD_NAMESPACE": "septum"}, namespace_file) == "septum"


async def test_a_busy_api_server_is_asked_again_until_it_answers() -> None:
    # An API server busy with the uninstall's garbage collection answers 503 for a while: an
    # answer of UNKNOWN once would leave the node chained to a plugin whose agent is gone.
    answers = [web.Response(status=503), web.Response(status=503)]
    deleting = {"metadata": {"name": "agent", "deletionTimestamp": "2026-12-06T00:00:00Z"}}

    async def daemonset(_request: web.Request) -> web.Response:
        return answers.pop(0) if answers else web.json_response(deleting)

    app = web.Application()
    app.router.add_get("/apis/apps/v1/namespaces/s/daemonsets/agent", daemonset)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with ApiClient(Configuration(host=f"http://127.0.0.1:{port}")) as api:
            owner = Owner("daemonsets", "s", "agent")
            state, reason, attempts = await settled_owner_state(api, owner, 10, pause_s=0.05)
    finally:
        await runner.cleanup()
    assert (state, attempts) == (OwnerState.GONE, 3), reason


async def test_an_unreachable_api_server_stays_unknown_after_the_budget() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with ApiClient(Configuration(host=f"http://127.0.0.1:{port}")) as api:
        owner = Owner("daemonsets", "s", "agent")
        state, _, attempts = await settled_owner_state(api, owner, 0.6, pause_s=0.1)
    assert state is OwnerState.UNKNOWN
    assert attempts >= 2
