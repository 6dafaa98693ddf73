"""`septum bench l7` end to end, shortly: every key, figures that are figures, and nothing
left behind (namespaces, processes)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from septum.bench.l7 import command

pytestmark = pytest.mark.privileged


def test_bench_l7_json_keys_and_values() -> None:
    result = CliRunner().invoke(
        command, ["--json", "--seconds", "1", "--rate", "200", "--rounds", "1"]
    )
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output)
    for key in ("http_rps_direct", "http_rps_proxied", "http_conn_rps_proxied"):
        assert figures[key] > 0, key
    assert figures["http_p99_ms_proxied"] >= figures["http_p50_ms_proxied"] > 0
    assert figures["http_p99_added_ms_at_1k_rps"] == pytest.approx(
        figures["http_p99_ms_proxied"] - figures["http_p99_ms_direct"], abs=0.002
    )
    assert figures["dns_qps_direct"] > 0 and figures["dns_qps_proxied"] > 0
    assert figures["http_rps_proxied_rounds"] == [figures["http_rps_proxied"]]
    assert figures["cpu_pct_keepalive"]["proxied"]["proxy"] > 0  # the proxy did the work
    assert figures["cpu_pct_keepalive"]["direct"]["proxy"] < 5  # direct bypassed it
    # Per CPU-second: each side's rate over the CPU of the process(es) that limit it, by mode.
    use = figures["cpu_pct_keepalive"]
    assert figures["http_rps_proxied_per_proxy_core"] == pytest.approx(
        figures["http_rps_proxied"] * 100 / use["proxied"]["proxy"], rel=0.02
    )
    assert figures["http_rps_direct_per_peer_core"] == pytest.approx(
        figures["http_rps_direct"] * 100 / (use["direct"]["server"] + use["direct"]["wrk"]),
        rel=0.02,
    )
    assert figures["http_conn_rps_proxied_share"] == pytest.approx(
        figures["http_conn_rps_proxied"] / figures["http_conn_rps_direct"], abs=0.002
    )
