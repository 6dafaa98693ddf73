"""Detached lab processes: started in their own session with a log file and a pid file.

The lab outlives the ``septum lab up`` command, so each process is re-parented to init; its pid
file (with the process start time, so a recycled pid is never killed) is how status and down
find it again.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Proc:
    name: str
    pid: int
    start_ticks: int


def _start_ticks(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22 (starttime) counted after the parenthesised command name, which may hold spaces.
    return int(stat.rsplit(")", 1)[1].split()[19])


def spawn(
    run_dir: Path, log_dir: Path, name: str, argv: Sequence[str], env: dict[str, str] | None = None
) -> Proc:
    run_dir.mkdir(parents=True, exist_ok=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / f"{name}.log", "ab") as log:
        popen = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
            close_fds=True,
        )
    ticks = _start_ticks(popen.pid) or 0
    (run_dir / f"{name}.pid").write_text(f"{popen.pid} {ticks}\n")
    # The command line is kept so that the supervisor can start the process again.
    (run_dir / f"{name}.argv").write_text(json.dumps(list(argv)))
    # Popen would otherwise warn (ResourceWarning) that the child is still running when the
    # object is collected; the lab deliberately lets it live on.
    popen.returncode = 0
    return Proc(name, popen.pid, ticks)


def read(run_dir: Path) -> list[Proc]:
    procs = []
    if run_dir.is_dir():
        for pidfile in sorted(run_dir.glob("*.pid")):
            try:
                pid_s, ticks_s = pidfile.read_text().split()
                procs.append(Proc(pidfile.stem, int(pid_s), int(ticks_s)))
            except ValueError:
                continue
    return procs


def alive(proc: Proc) -> bool:
    _reap(proc.pid)
    ticks = _start_ticks(proc.pid)
    if ticks is None or ticks != proc.start_ticks:
        return False
    try:
        state = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def stop(procs: Sequence[Proc], timeout_s: float = 3.0) -> None:
    """SIGTERM each live process group, then SIGKILL whatever is left at the deadline."""
    live = [p for p in procs if alive(p)]
    for p in live:
        _signal_group(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while live and time.monotonic() < deadline:
        live = [p for p in live if alive(p)]
        if live:
            time.sleep(0.1)
    for p in live:
        _signal_group(p.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while any(alive(p) for p in live) and time.monotonic() < deadline:
        time.sleep(0.05)


def _reap(pid: int) -> None:
    # When the lab was started from this very process (tests), collect the exit status so no
    # zombie is left behind; for other processes this is a no-op.
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def argv_of(run_dir: Path, name: str) -> list[str] | None:
    try:
        argv = json.loads((run_dir / f"{name}.argv").read_text())
    except (OSError, ValueError):
        return None
    return [str(a) for a in argv] if isinstance(argv, list) else None


def naming(path: Path) -> list[Proc]:
    """Live processes whose command line names `path` or a file under it (not this process or
    its ancestors): the lab's own processes, found even when no pid file names them."""
    root = str(path)
    spared = {os.getpid()}
    pid = os.getppid()
    while pid > 1 and pid not in spared:
        spared.add(pid)
        pid = _parent(pid)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in spared:
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if any(arg == root or root + "/" in arg for arg in argv):
            ticks = _start_ticks(int(entry.name))
            if ticks is not None:
                found.append(Proc(Path(argv[0]).name, int(entry.name), ticks))
    return found


def _parent(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    return int(stat.rsplit(")", 1)[1].split()[1])
