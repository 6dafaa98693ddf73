"""Bench processes in network namespaces: `python -m <module> <args>` under `ip netns exec`.

A long-running role prints "ready" once it listens; a measuring role prints one JSON line
last. (For the L7 bench's processes: its DNS part uses these; the HTTP part may too.)"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any


class BenchProcessError(RuntimeError):
    """A bench process did not start or failed (the message names it)."""


def _argv(ns: str, module: str, args: tuple[str, ...]) -> list[str]:
    return ["ip", "netns", "exec", ns, sys.executable, "-m", module, *args]


def start(ns: str, module: str, *args: str) -> subprocess.Popen[str]:
    """Start a role and wait for its "ready" line."""
    process = subprocess.Popen(_argv(ns, module, args), stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    if line != "ready":
        stop(process)
        raise BenchProcessError(f"{module} {args[0]} did not start ({line!r})")
    return process


def stop(process: subprocess.Popen[str]) -> None:
    process.kill()
    process.wait(timeout=10)
    if process.stdout is not None:
        process.stdout.close()


def run_json(ns: str, module: str, *args: str, timeout_s: float) -> dict[str, Any]:
    """Run a measuring role to its end; its last output line, as JSON."""
    done = subprocess.run(
        _argv(ns, module, args), capture_output=True, text=True, timeout=timeout_s, check=False
    )
    if done.returncode:
        raise BenchProcessError(f"{module} {args[0]} failed: {done.stderr.strip()}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


__all__ = ["BenchProcessError", "run_json", "start", "stop"]
