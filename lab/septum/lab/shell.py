"""Running the system tools the lab drives (ip, iptables, CNI plugins): one helper, clear errors."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

from septum.lab.errors import CommandError


def run(argv: Sequence[str], *, check: bool = True, input_text: str | None = None) -> str:
    """Runs ``argv`` and returns its stdout; a failure raises CommandError quoting its stderr."""
    proc = subprocess.run(list(argv), input=input_text, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise CommandError(f"{' '.join(argv)} failed: {detail[-1] if detail else proc.returncode}")
    return proc.stdout


def in_netns(netns: str, argv: Sequence[str]) -> list[str]:
    return ["ip", "netns", "exec", netns, *argv]
