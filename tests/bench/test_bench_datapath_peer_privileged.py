"""`septum bench datapath` without its Cilium peer: one line says why, Septum's figures
are still printed, and the peer's keys are null (never a silent zero).  And Septum's side
of the comparison, timed as the peer times Cilium, on a short run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from septum.bench import ciliumpeer, septumside
from septum.bench.datapath import CONN_KEYS, KEYS
from septum.bench.datapath import command as bench_command
from septum.bench.peercompare import PEER_KEYS

pytestmark = pytest.mark.privileged


def test_without_the_peer_the_bench_says_so_in_one_line_and_prints_septums_figures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = tmp_path / "build-cilium-peer.sh"
    broken.write_text(
        "#!/bin/sh\necho 'build-cilium-peer: clang-19 is not installed' >&2\nexit 1\n"
    )
    broken.chmod(0o755)
    monkeypatch.setattr(ciliumpeer, "BUILD_SCRIPT", broken)
    result = CliRunner().invoke(
        bench_command,
        ["--json", "--repeats", "2000", "--singles", "100", "--peer-rounds", "1"]
        + ["--rounds", "1", "--seconds", "1"],
    )
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [
        "septum bench datapath: Cilium peer unavailable (build-cilium-peer.sh failed: "
        "build-cilium-peer: clang-19 is not installed); Septum's figures only"
    ]
    figures = json.loads(result.stdout)
    assert tuple(figures) == KEYS + tuple(PEER_KEYS) + CONN_KEYS
    for key in KEYS + CONN_KEYS + ("septum_deny_reader_ns", "septum_new_allow_reader_ns"):
        assert figures[key] > 0, key
    for key in PEER_KEYS:
        if key.startswith("cilium_"):
            assert figures[key] is None, key


def test_septums_side_is_timed_like_the_peer_with_and_without_its_reader() -> None:
    with septumside.loaded_node() as node:
        figures = septumside.measure(node, repeats=5_000, singles=200)
    for key in septumside.FIGURE_KEYS:
        assert figures[key] > 0, key
    # every one-run new connection sent its event, and the reader thread read them
    assert figures["events_read"] >= 200
