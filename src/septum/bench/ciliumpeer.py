"""Cilium's own endpoint program as a peer of `septum bench datapath`: built (and cached)
by lab/gobuild/build-cilium-peer.sh, run by its Go loader `ciliumpeer`, which prints JSON.
Anything that keeps the peer from running is one PeerUnavailable with a one-line reason:
the bench then prints Septum's figures alone and says why."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any, Final

BUILD_SCRIPT: Final = Path(__file__).resolve().parents[3] / "lab/gobuild/build-cilium-peer.sh"
# a cold build downloads the cilium module if the hubble build has not; warm it is seconds
BUILD_TIMEOUT_S: Final = 1800
RUN_TIMEOUT_S: Final = 600


class PeerUnavailable(Exception):
    """The Cilium peer could not be built or run here; str() is one line."""


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def peer_dir(build_script: Path | None = None) -> Path:
    """The directory holding peer_lxc.o and ciliumpeer, built first if needed."""
    build_script = BUILD_SCRIPT if build_script is None else build_script
    try:
        done = subprocess.run(
            [str(build_script), "--path"],
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        raise PeerUnavailable(f"{build_script.name}: {err}") from err
    if done.returncode:
        raise PeerUnavailable(f"{build_script.name} failed: {_last_line(done.stderr)}")
    path = Path(_last_line(done.stdout))
    if not (path / "ciliumpeer").is_file() or not (path / "peer_lxc.o").is_file():
        raise PeerUnavailable(f"{build_script.name} built nothing in {path}")
    return path


def cilium_version(directory: Path) -> str:
    return (directory / "cilium-version").read_text().strip()


def clang_version(directory: Path) -> str:
    return (directory / "clang-version").read_text().strip()


def run_peer(
    directory: Path,
    mode: str,
    *,
    allowed: bytes,
    denied: bytes,
    repeats: int = 1_000_000,
    singles: int = 20_000,
) -> dict[str, Any]:
    """One run of the loader (`mode` verdicts or bench) on the given packets."""
    argv = [
        str(directory / "ciliumpeer"),
        "-obj",
        str(directory / "peer_lxc.o"),
        "-mode",
        mode,
        "-repeats",
        str(repeats),
        "-singles",
        str(singles),
        "-allowed",
        allowed.hex(),
        "-denied",
        denied.hex(),
    ]
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        raise PeerUnavailable(f"ciliumpeer: {err}") from err
    if done.returncode:
        raise PeerUnavailable(f"ciliumpeer -mode {mode}: {_last_line(done.stderr)}")
    try:
        figures: dict[str, Any] = json.loads(done.stdout)
    except json.JSONDecodeError as err:
        raise PeerUnavailable(f"ciliumpeer -mode {mode} printed no JSON: {err}") from err
    return figures
