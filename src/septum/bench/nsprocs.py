"""Bench processes in network namespaces: `python -m <module> <args>` under `ip netns exec`.

A long-running role prints "ready" once it listens; a measuring role prints one JSON line
last.  `cpu` pins a process (and what it starts) to one CPU with taskset, so a bench can say
which core each side had.  Used by both parts of `septum bench l7`."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from typing import Any


class BenchProcessError(RuntimeError):
    """A bench process did not start or failed (the message names it)."""


def role_parser(
    prog: str, load_role: str
) -> tuple[argparse.ArgumentParser, argparse.ArgumentParser, argparse.ArgumentParser]:
    """The roles every proxy bench's processes have, ``server ADDRESS PORT``, ``proxy PORT
    IDENTITY`` and a load role ``ADDRESS PORT [--seconds S]``: (the parser, the proxy's and
    the load role's parsers, to add their own options to)."""
    parser = argparse.ArgumentParser(prog=prog)
    sub = parser.add_subparsers(dest="role", required=True)
    server = sub.add_parser("server")
    proxy = sub.add_parser("proxy")
    load = sub.add_parser(load_role)
    for role in (server, load):
        role.add_argument("address")
        role.add_argument("port", type=int)
    proxy.add_argument("port", type=int)
    proxy.add_argument("identity", type=int)
    load.add_argument("--seconds", type=float, default=3.0)
    return parser, proxy, load


def in_ns(ns: str, argv: list[str], cpu: int | None = None) -> list[str]:
    """`argv` run in network namespace `ns` (pinned to `cpu` when given)."""
    pinned = ["taskset", "-c", str(cpu)] if cpu is not None else []
    return [*pinned, "ip", "netns", "exec", ns, *argv]


def _argv(ns: str, module: str, args: tuple[str, ...], cpu: int | None) -> list[str]:
    return in_ns(ns, [sys.executable, "-m", module, *args], cpu)


def start(ns: str, module: str, *args: str, cpu: int | None = None) -> subprocess.Popen[str]:
    """Start a role and wait for its "ready" line."""
    process = subprocess.Popen(_argv(ns, module, args, cpu), stdout=subprocess.PIPE, text=True)
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


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a running process has used so far (/proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_json(
    ns: str, module: str, *args: str, timeout_s: float, cpu: int | None = None
) -> dict[str, Any]:
    """Run a measuring role to its end; its last output line, as JSON."""
    done = subprocess.run(
        _argv(ns, module, args, cpu), capture_output=True, text=True, timeout=timeout_s, check=False
    )
    if done.returncode:
        raise BenchProcessError(f"{module} {args[0]} failed: {done.stderr.strip()}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


__all__ = [
    "BenchProcessError",
    "cpu_seconds",
    "in_ns",
    "role_parser",
    "run_json",
    "start",
    "stop",
]
