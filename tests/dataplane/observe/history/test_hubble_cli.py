"""The real hubble CLI asks for last day's drops and gets them from the store (lab: Go build)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from observe_helpers import DEATHSTAR, TIEFIGHTER, XWING, RunningObserver, event


def test_hubble_observe_last_day_drops_of_a_namespace(
    hubble: Path, history_observer: RunningObserver
) -> None:
    for i in range(0, 300, 50):  # far more than the 16-flow ring holds
        history_observer.push(
            *(
                event(
                    (XWING, TIEFIGHTER)[j % 2],
                    DEATHSTAR,
                    src_port=3000 + j,
                    verdict=2 if j % 10 == 0 else 1,
                    drop_reason=133 if j % 10 == 0 else 0,
                    event_type=1 if j % 10 == 0 else 5,
                )
                for j in range(i, i + 50)
            )
        )
    assert history_observer.node.history is not None
    assert history_observer.node.history.writer.flush(10)
    env = {**os.environ, "HOME": str(history_observer.socket.parent)}
    done = subprocess.run(
        [
            str(hubble), "observe", "--since", "24h", "--verdict", "DROPPED",
            "--from-namespace", "default", "-o", "json", "--server", history_observer.target,
        ],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    flows = [json.loads(line)["flow"] for line in done.stdout.splitlines() if line.strip()]
    ports = [f["l4"]["TCP"]["source_port"] for f in flows]
    # xwing (default) is every even j; drops are every tenth: j = 0, 10, 20, ...
    assert ports == [3000 + j for j in range(0, 300, 10)]
    assert {f["verdict"] for f in flows} == {"DROPPED"}
    assert {f["source"]["namespace"] for f in flows} == {"default"}
