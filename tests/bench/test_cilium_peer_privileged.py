"""The Cilium peer of `septum bench datapath`: Cilium's own bpf_lxc, built through the cached
lab/gobuild/build-cilium-peer.sh (the first run of a machine builds it, later runs find it),
loaded by Cilium's loader library, with Septum's population in its maps.  Verdicts only: the
figures belong to the bench."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from septum.bench import ciliumpeer
from septum.bench.population import (
    DENIED_PORT,
    POD_IPV4,
    SOURCE_PORT,
    allowed_packet,
    denied_packet,
    peer_ipv4,
    peer_port,
)
from septum.bench.septumside import FIGURE_KEYS
from septum.dataplane.packets import TCP_ACK, tcp4

pytestmark = pytest.mark.privileged

TC_ACT_OK = 0
TC_ACT_SHOT = 2
HUBBLE_BUILD = Path(__file__).resolve().parents[2] / "lab/gobuild/build-hubble.sh"


@pytest.fixture(scope="module")
def peer() -> Path:
    return ciliumpeer.peer_dir()


def test_the_peer_is_cilium_at_the_hubble_builds_pin_compiled_by_clang_19(peer: Path) -> None:
    pinned = re.search(r"HUBBLE_CILIUM_VERSION:-(v[0-9.]+)", HUBBLE_BUILD.read_text())
    assert pinned is not None
    assert ciliumpeer.cilium_version(peer) == pinned.group(1)
    assert "clang version 19." in ciliumpeer.clang_version(peer)
    assert (peer / ".stamp").is_file()
    # a second call finds the cached build (the stamp matches): same directory
    assert ciliumpeer.peer_dir() == peer


def test_new_allow_established_and_deny_get_ciliums_verdicts(peer: Path) -> None:
    result = ciliumpeer.run_peer(peer, "verdicts", allowed=allowed_packet(), denied=denied_packet())
    assert result["new_allow_verdict"] == TC_ACT_OK
    assert result["established_verdict"] == TC_ACT_OK
    assert result["deny_verdict"] == TC_ACT_SHOT
    # the new connection created conntrack state; the established packet and the drop none
    assert result["conntrack_after_new_allow"] > 0
    assert result["conntrack_after_established"] == result["conntrack_after_new_allow"]
    assert result["conntrack_after_deny"] == result["conntrack_after_new_allow"]
    # configured as the agent runs: policy verdict events on, drops notified
    assert result["new_allow_events"].get("policy-verdict") == 1
    assert result["deny_events"].get("policy-verdict") == 1
    assert result["deny_events"].get("drop") == 1


def test_the_verdict_follows_the_loaded_population(peer: Path) -> None:
    # peer 7 is allowed on its own port only: the maps hold Septum's 10,000 entries,
    # not an allow-all
    allowed = tcp4(POD_IPV4, peer_ipv4(7), SOURCE_PORT, peer_port(7), TCP_ACK)
    other_port = tcp4(POD_IPV4, peer_ipv4(7), SOURCE_PORT, peer_port(8), TCP_ACK)
    result = ciliumpeer.run_peer(peer, "verdicts", allowed=allowed, denied=other_port)
    assert result["new_allow_verdict"] == TC_ACT_OK
    assert result["deny_verdict"] == TC_ACT_SHOT
    # an address outside the ipcache (identity world) is denied too
    world = tcp4(POD_IPV4, "192.0.2.1", SOURCE_PORT, DENIED_PORT, TCP_ACK)
    result = ciliumpeer.run_peer(peer, "verdicts", allowed=allowed, denied=world)
    assert result["deny_verdict"] == TC_ACT_SHOT


def test_bench_mode_reports_every_figure_positive(peer: Path) -> None:
    figures = ciliumpeer.run_peer(
        peer,
        "bench",
        allowed=allowed_packet(),
        denied=denied_packet(),
        repeats=5_000,
        singles=200,
    )
    for key in FIGURE_KEYS:
        assert figures[key] > 0, key
    # the reader read the events of the runs it watched (2 per drop, 2 per new connection)
    assert figures["events_read"] >= 4 * 200
    assert figures["events_lost"] == 0


def test_a_build_that_fails_is_one_line_not_an_exception_trace(tmp_path: Path) -> None:
    script = tmp_path / "build.sh"
    script.write_text("#!/bin/sh\necho 'first' >&2\necho 'clang-19 is not installed' >&2\nexit 1\n")
    script.chmod(0o755)
    with pytest.raises(ciliumpeer.PeerUnavailable) as err:
        ciliumpeer.peer_dir(script)
    assert str(err.value) == "build.sh failed: clang-19 is not installed"
