"""`septum bench e2e`'s table: the run's figures beside the issue's targets."""

from __future__ import annotations

from typing import Any

TARGETS = {"apply_to_enforce_p99_ms": 1000.0, "agent_rss_mb": 150.0, "operator_rss_mb": 200.0}


def _stats_text(stats: dict[str, float]) -> str:
    if not stats:
        return "—"
    return f"{stats['p50_ms']:.0f} / {stats['p99_ms']:.0f} ms (max {stats['max_ms']:.0f})"


def print_table(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    d = result["details"]
    table = Table(
        "measure",
        "value",
        "target",
        title=(
            f"septum bench e2e ({d['nodes']} nodes, {d['pods']} pods, {d['applies']} applies, "
            f"{d['machine']['cpus']} cpus)"
        ),
    )

    def ms(value: float | None) -> str:
        return "—" if value is None else f"{value:.0f} ms"

    table.add_row(
        "kubectl apply → enforced on every node, p50 / p99",
        f"{ms(result['apply_to_enforce_p50_ms'])} / {ms(result['apply_to_enforce_p99_ms'])}",
        "p99 ≤ 1,000 ms",
    )
    table.add_row(
        "  deny→allow (first SYN let through), p50 / p99",
        _stats_text(d["by_transition"]["deny→allow"]),
        "",
    )
    table.add_row(
        "  allow→deny (first SYN dropped), p50 / p99",
        _stats_text(d["by_transition"]["allow→deny"]),
        "",
    )
    for node, stats in d["by_node"].items():
        table.add_row(f"  servers on {node}, p50 / p99", _stats_text(stats), "")
    table.add_row(
        "reference: kubectl apply returned, p50 / p99", _stats_text(d["kubectl_apply_return"]), ""
    )
    table.add_row(
        "reference: seen by a kubectl get --watch, p50 / p99", _stats_text(d["watch_seen"]), ""
    )
    table.add_row(
        "enforced after the watch saw it, p50 / p99", _stats_text(d["enforce_after_watch"]), ""
    )
    table.add_row("applies not enforced in time", str(d["timeouts"]), "0")
    table.add_row(
        "agent RSS (largest agent, peak)",
        f"{result['agent_rss_mb']:.0f} MB",
        f"≤ {TARGETS['agent_rss_mb']:.0f} MB",
    )
    table.add_row(
        "operator RSS (peak)",
        f"{result['operator_rss_mb']:.0f} MB",
        f"≤ {TARGETS['operator_rss_mb']:.0f} MB",
    )
    table.add_row(
        "probing",
        f"every {d['probe_interval_ms']:g} ms per pair, {d['hold']} in a row, "
        f"drop = no answer in {d['probe_timeout_ms']:g} ms; {d['probes']} connections",
        "",
    )
    table.add_row(f"{d['pods']} pods Running and Ready", f"{d['pods_ready_s']:.0f} s", "")
    Console().print(table)
