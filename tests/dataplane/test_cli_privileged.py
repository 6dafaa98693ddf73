"""`septum datapath-demo` and `septum bench datapath` run end to end and leave nothing behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from septum.bench.datapath import CONN_KEYS, KEYS
from septum.bench.datapath import command as bench_command
from septum.bench.peercompare import PEER_KEYS
from septum.cli.datapathdemo import datapath_demo
from septum.dataplane.sandbox import sandbox_namespaces

pytestmark = pytest.mark.privileged
PINS = Path("/sys/fs/bpf/septum")


def _pins(prefix: str) -> list[str]:
    return [p.name for p in PINS.glob(f"{prefix}*")] if PINS.exists() else []


def test_demo_allows_one_drops_the_other_and_cleans_up():
    result = CliRunner().invoke(datapath_demo, [])
    assert result.exit_code == 0, result.output
    assert "frontend -> backend:8080  connected" in result.output
    assert "intruder -> backend:8080  dropped" in result.output
    assert "DROPPED" in result.output and "FORWARDED" in result.output
    assert "POLICY_DENIED" in result.output
    assert "intruder was dropped: policy denied" in result.output
    assert sandbox_namespaces("sdpd") == []
    assert _pins("demo-") == []


def test_bench_datapath_json_has_exactly_the_documented_keys():
    # a functional run with tiny sizes (the figures themselves come from the real run)
    result = CliRunner().invoke(
        bench_command,
        ["--json", "--repeats", "2000", "--singles", "200", "--peer-rounds", "2"]
        + ["--rounds", "1", "--seconds", "1", "--conn-rounds", "1"],
    )
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert tuple(figures) == KEYS + tuple(PEER_KEYS) + CONN_KEYS
    assert set(KEYS) == {
        "baseline_ns",
        "established_ns",
        "new_allow_ns",
        "deny_ns",
        "iperf_ratio",
        "iptables_iperf_ratio",
        "new_conn_per_s",
        "iptables_new_conn_per_s",
        "live_ns_per_packet",
    }
    # issue 17's peer keys: the Cilium peer runs here (its build is cached), so none is null
    assert set(PEER_KEYS) == {
        "cilium_established_ns",
        "cilium_new_allow_ns",
        "cilium_deny_ns",
        "cilium_deny_reader_ns",
        "cilium_new_allow_reader_ns",
        "septum_deny_reader_ns",
        "septum_new_allow_reader_ns",
    }
    assert result.stderr == ""
    assert all(value is not None and value > 0 for value in figures.values()), figures
    assert sandbox_namespaces("sdpb") == []
    assert _pins("bench-") == []
