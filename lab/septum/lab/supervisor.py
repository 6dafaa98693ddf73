"""``python -m septum.lab.supervisor --state DIR``: restarts lab processes that exit.

The lab's processes are started by ``septum lab up`` (which must order them: etcd and the API
server first), so they are not this process's children; it watches their pid files instead and
starts a dead one again from its recorded command line, with back-off (1 s doubling to 30 s,
forgotten after 60 s of uptime). Restarts are counted in ``run/<name>.restarts`` for status.
"""

from __future__ import annotations

import argparse
import signal
import time
from pathlib import Path

from septum.lab import procs
from septum.lab.layout import StateDir

NAME = "supervisor"
POLL_S = 1.0
BACKOFF_MIN_S = 1.0
BACKOFF_MAX_S = 30.0
HEALTHY_AFTER_S = 60.0


def restarts(run_dir: Path, name: str) -> int:
    try:
        return int((run_dir / f"{name}.restarts").read_text())
    except (OSError, ValueError):
        return 0


def supervise(state: StateDir) -> None:
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    backoff: dict[str, float] = {}
    next_try: dict[str, float] = {}
    started: dict[str, float] = {}
    while not stopping:
        now = time.monotonic()
        for proc in procs.read(state.run):
            if proc.name == NAME:
                continue
            if procs.alive(proc):
                if now - started.get(proc.name, now) > HEALTHY_AFTER_S:
                    backoff.pop(proc.name, None)
                continue
            if now < next_try.get(proc.name, 0):
                continue
            argv = procs.argv_of(state.run, proc.name)
            if argv is None:
                continue
            delay = backoff.get(proc.name, BACKOFF_MIN_S)
            print(
                f"{time.strftime('%H:%M:%S')} {proc.name} (pid {proc.pid}) exited: "
                f"restarting; next back-off {delay:.0f}s",
                flush=True,
            )
            procs.spawn(state.run, state.logs, proc.name, argv)
            count = restarts(state.run, proc.name) + 1
            (state.run / f"{proc.name}.restarts").write_text(str(count))
            started[proc.name] = now
            next_try[proc.name] = now + delay
            backoff[proc.name] = min(delay * 2, BACKOFF_MAX_S)
        time.sleep(POLL_S)


def main() -> None:
    parser = argparse.ArgumentParser(prog="septum-lab-supervisor")
    parser.add_argument("--state", type=Path, required=True)
    supervise(StateDir(parser.parse_args().state))


if __name__ == "__main__":
    main()
