"""`septum bench e2e` on the shared lab, small: it runs, reports its keys, and leaves nothing.

Functional only: the figures are not asserted (the machine is shared and noisy).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psutil  # type: ignore[import-untyped]
import pytest

from septum.bench.e2e import KEYS
from septum.bench.labagents import CONFLIST, PIN_ROOT, RUN_DIR, agent_already_running
from septum.lab.lab import Lab

pytestmark = [pytest.mark.privileged, pytest.mark.lab]

SEPTUM = str(Path(sys.executable).parent / "septum")


def test_small_run_reports_the_keys_and_cleans_up(lab: Lab) -> None:
    # The bench waits its turn for the lab's agents lock (another session's agents).
    out = subprocess.run(
        [SEPTUM, "bench", "e2e", "--pods", "10", "--applies", "3", "--json"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    result = json.loads(out.stdout)
    assert set(result) == {*KEYS, "details"}
    for key in KEYS:
        assert isinstance(result[key], float) and result[key] > 0, (key, result[key])
    details = result["details"]
    assert details["applies"] == 3 and details["timeouts"] == 0
    assert [a["transition"] for a in details["per_apply"]] == [
        "deny→allow",
        "allow→deny",
        "deny→allow",
    ]
    assert set(details["by_node"]) == {node.name for node in lab.nodes}

    namespace = details["namespace"]
    gone = lab.kubectl("get", "namespace", namespace, check=False)
    assert gone.returncode != 0 and "NotFound" in gone.stderr, gone.stdout
    identities = lab.get_json("septumidentities", "-l", f"septum.io/namespace={namespace}")
    assert identities["items"] == []
    pids = details["pids"]
    alive = [
        pid
        for pid in [*pids["agents"], pids["operator"], *pids["probers"]]
        if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    ]
    assert alive == [], alive
    if agent_already_running(lab) is None:  # else another session's agent owns these now
        for node in lab.nodes:
            net_d = lab.state.node_dir(node.name) / "cni" / "net.d"
            assert not (net_d / CONFLIST).exists()
            assert not (PIN_ROOT / node.name).exists()
            assert not (RUN_DIR / node.name).exists()
