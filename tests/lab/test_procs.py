"""procs.naming: the lab's processes found by the state directory their command line names."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from septum.lab import procs


def test_naming_finds_a_process_naming_the_directory_and_spares_this_one(tmp_path: Path) -> None:
    state = tmp_path / "lab"
    other = tmp_path / "lab-other"
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    ours = subprocess.Popen([*sleeper, f"--kubeconfig={state}/kubeconfig/admin.conf"])
    theirs = subprocess.Popen([*sleeper, str(other / "x")])
    try:
        found = {proc.pid for proc in procs.naming(state)}
        assert ours.pid in found
        assert theirs.pid not in found  # a sibling directory sharing the prefix is not ours
        procs.stop(procs.naming(state))
        ours.wait(timeout=10)  # stopped (procs reaps its children, so no exit status is left)
        assert not procs.naming(state)
        assert theirs.poll() is None
    finally:
        for popen in (ours, theirs):
            popen.kill()
            popen.wait()
