"""The kernel's own BPF run-time statistics (kernel.bpf_stats_enabled) of the programs a
node has attached, switched on only while one measured action runs."""

from __future__ import annotations

import fcntl
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Final

import click

from septum.dataplane import abi
from septum.dataplane.datapath import NodeDatapath

BPF_STATS: Final = Path("/proc/sys/kernel/bpf_stats_enabled")
STATS_LOCK: Final = Path("/run/lock/septum-bench-bpf-stats")


def bpf_stats(node: NodeDatapath) -> tuple[int, int]:
    """(run_time_ns, run_cnt) summed over the attached tc programs."""
    out = subprocess.run(
        ["bpftool", "-j", "prog", "show"], capture_output=True, text=True, check=True
    ).stdout
    wanted = {prog_id(node.program_fd(p)) for p in (abi.PROG_FROM_POD, abi.PROG_TO_POD)}
    run_time = runs = 0
    for prog in json.loads(out):
        if prog.get("id") in wanted:
            run_time += int(prog.get("run_time_ns", 0))
            runs += int(prog.get("run_cnt", 0))
    return run_time, runs


def prog_id(fd: int) -> int:
    for line in Path(f"/proc/self/fdinfo/{fd}").read_text().splitlines():
        if line.startswith("prog_id:"):
            return int(line.split()[1])
    raise click.ClickException(f"no prog_id for fd {fd}")


def measure_live(node: NodeDatapath, action: Callable[[], object]) -> tuple[int, int]:
    """Run `action` with kernel.bpf_stats_enabled on, then restore the previous value.
    An exclusive lock keeps two benchmarks from restoring each other's values."""
    with open(STATS_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        previous = BPF_STATS.read_text().strip()
        BPF_STATS.write_text("1")
        try:
            start = bpf_stats(node)
            action()
            end = bpf_stats(node)
        finally:
            BPF_STATS.write_text(previous)
    return end[0] - start[0], end[1] - start[1]
