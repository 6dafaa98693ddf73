"""`septum bench ui` end to end on a small setting: every key the issue names, measured (no
timing is asserted here: figures live in docs/benchmarks.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_bench_ui_json_keys() -> None:
    out = subprocess.run(
        [str(Path(sys.executable).parent / "septum"), "bench", "ui", "--json"]
        + ["--workloads", "40", "--namespaces", "4", "--rate", "200", "--seconds", "1"]
        + ["--repeat", "1"],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    for key in ("first_flow_ms", "map_500_render_ms", "follow_1k_fps_p5", "follow_1k_heap_mb"):
        assert isinstance(result[key], float) and result[key] > 0, (key, result)
    assert result["edges"] == 80 and result["workloads"] == 40
    assert result["flows_fed"] >= 100  # 1 s at 200/s, fed in 10 ms ticks
    assert result["follow_frames"] > 0 and result["bridge_first_message_ms"] > 0
    assert set(result["targets_met"]) == {
        "first_flow_ms",
        "map_500_render_ms",
        "follow_1k_fps_p5",
        "follow_1k_heap_mb",
    }
