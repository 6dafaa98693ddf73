"""The proxy routing over the agent's lifetime on a real namespace: an uninstall (or an
agent started without --l7-proxy) removes it whoever installed it, and puts the node's
ip_early_demux back to what it was before the proxy routing turned it off."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from septum.agent.l7.proxyrouting import (
    ROUTING_STATE_FILE,
    release_proxy_routing,
    remember_early_demux,
)
from septum.agent.l7.service import L7ProxyService
from septum.dataplane import l7redirect
from tests.dataplane.test_l7_redirect_privileged import proxy_routing_left

pytestmark = pytest.mark.privileged


@pytest.fixture
def node_ns() -> Iterator[str]:
    ns = f"sl7pr-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        yield ns
    finally:
        subprocess.run(["ip", "netns", "delete", ns], check=False)


def test_release_restores_the_remembered_early_demux(node_ns: str, tmp_path: Path) -> None:
    # a node whose early demux was off before Septum: it stays off
    l7redirect.set_early_demux("0", node_ns)
    before = l7redirect.install_proxy_routing(node_ns)
    assert before == "0"
    remember_early_demux(tmp_path, before)
    assert proxy_routing_left(node_ns) != []
    assert release_proxy_routing(tmp_path, node_ns) is True
    assert proxy_routing_left(node_ns) == []
    assert l7redirect.early_demux(node_ns) == "0"
    assert not (tmp_path / ROUTING_STATE_FILE).exists()


def test_routing_of_an_agent_that_kept_no_record_restores_the_default(
    node_ns: str, tmp_path: Path
) -> None:
    """Installed by an agent older than the record (or whose state was lost): the kernel's
    default, 1, comes back."""
    l7redirect.install_proxy_routing(node_ns)
    assert l7redirect.early_demux(node_ns) == "0"
    assert release_proxy_routing(tmp_path, node_ns) is True
    assert proxy_routing_left(node_ns) == []
    assert l7redirect.early_demux(node_ns) == "1"


def test_nothing_installed_is_tolerated_and_touches_nothing(node_ns: str, tmp_path: Path) -> None:
    l7redirect.set_early_demux("0", node_ns)  # the node's own choice, not Septum's
    assert release_proxy_routing(tmp_path / "missing", node_ns) is False
    assert l7redirect.early_demux(node_ns) == "0"


def test_half_removed_routing_is_removed_the_rest_of_the_way(node_ns: str, tmp_path: Path) -> None:
    before = l7redirect.install_proxy_routing(node_ns)
    assert before == "1"
    remember_early_demux(tmp_path, before)
    subprocess.run(
        ["ip", "netns", "exec", node_ns, "iptables", "-w", "5", "-t", "raw", "-F", "PREROUTING"],
        check=True,
    )
    subprocess.run(["ip", "-n", node_ns, "-6", "route", "flush", "table", "2004"], check=True)
    assert release_proxy_routing(tmp_path, node_ns) is True
    assert proxy_routing_left(node_ns) == []
    assert l7redirect.early_demux(node_ns) == "1"


def test_the_service_remembers_what_it_found_and_a_restart_keeps_it(
    node_ns: str, tmp_path: Path
) -> None:
    """The agent's proxies: the first start records the node's value; a restarted agent
    (routing still there, early demux 0) keeps that record; the uninstall restores it."""
    for _ in range(2):
        service = L7ProxyService(lambda *_: (), lambda _: 2, ns=node_ns, state_dir=tmp_path)
        service.start()
        service.stop()
        assert l7redirect.early_demux(node_ns) == "0"
        assert '"ipEarlyDemux": "1"' in (tmp_path / ROUTING_STATE_FILE).read_text()
    assert release_proxy_routing(tmp_path, node_ns) is True
    assert proxy_routing_left(node_ns) == []
    assert l7redirect.early_demux(node_ns) == "1"
