"""Flows through the relay, read with the real hubble CLI and with `septum observe`."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from septum.demo.errors import DemoError

ROOT = Path(__file__).resolve().parents[3]
SEPTUM = str(Path(sys.executable).parent / "septum")


@dataclass(frozen=True)
class FlowLine:
    """What a user reads in one flow: who, to whom, the verdict and the deciding policies."""

    source: str  # namespace/pod
    destination: str
    port: int
    verdict: str
    policies: tuple[str, ...]  # allowed_by or denied_by, whichever the verdict uses
    drop_reason: str

    @staticmethod
    def of(flow: dict[str, Any]) -> FlowLine:
        def who(side: str) -> str:
            ep = flow.get(side) or {}
            pod = ep.get("pod_name", "")
            return f"{ep.get('namespace', '')}/{pod}" if pod else ", ".join(ep.get("labels") or [])

        l4 = flow.get("l4") or {}
        port = int((l4.get("TCP") or l4.get("UDP") or {}).get("destination_port", 0))
        verdict = str(flow.get("verdict", ""))
        key = "allowed_by" if verdict == "FORWARDED" else "denied_by"
        policies = tuple(
            f"{p.get('kind', '')}/{p.get('namespace', '')}/{p.get('name', '')}".replace("//", "/")
            for direction in ("ingress", "egress")
            for p in flow.get(f"{direction}_{key}") or []
        )
        return FlowLine(
            who("source"), who("destination"), port, verdict, policies,
            str(flow.get("drop_reason_desc", "")),
        )  # fmt: skip


def hubble_binary() -> Path:
    """The real hubble CLI, built (or found cached) by lab/gobuild/build-hubble.sh."""
    proc = subprocess.run(
        [str(ROOT / "lab" / "gobuild" / "build-hubble.sh"), "--path"],
        capture_output=True, text=True, timeout=3600, check=False,
    )  # fmt: skip
    path = Path(proc.stdout.strip().splitlines()[-1]) if proc.stdout.strip() else None
    if proc.returncode != 0 or path is None or not path.is_file():
        raise DemoError(f"hubble CLI not available: {proc.stderr.strip()[-500:]}")
    return path


def _json_lines(argv: list[str], env: dict[str, str] | None = None) -> list[dict[str, Any]]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env, check=False)
    if proc.returncode != 0:
        raise DemoError(f"{Path(argv[0]).name} {' '.join(argv[1:3])}: {proc.stderr.strip()}")
    out = []
    for line in proc.stdout.splitlines():
        if line.strip():
            message = json.loads(line)
            if "flow" in message:
                out.append(message["flow"])
    return out


def hubble_observe(hubble: Path, server: str, *filters: str) -> list[dict[str, Any]]:
    """`hubble observe --server SERVER -o json FILTERS...` (a throwaway HOME: no user config)."""
    env = {"HOME": "/nonexistent", "PATH": "/usr/bin:/bin"}
    return _json_lines([str(hubble), "observe", "--server", server, "-o", "json", *filters], env)


def hubble_compact(hubble: Path, server: str, *filters: str) -> str:
    """`hubble observe --server SERVER -o compact FILTERS...`: the lines a user reads."""
    env = {"HOME": "/nonexistent", "PATH": "/usr/bin:/bin"}
    argv = [str(hubble), "observe", "--server", server, "-o", "compact", *filters]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env, check=False)
    if proc.returncode != 0:
        raise DemoError(f"hubble observe: {proc.stderr.strip()}")
    return proc.stdout


def septum_observe(server: str, *filters: str) -> list[dict[str, Any]]:
    return _json_lines([SEPTUM, "observe", "--server", server, "-o", "json", *filters])


def deathstar_filters(since: str) -> list[str]:
    """The flows a user looks at: to the deathstar pods, on TCP 80, from the start of the walk."""
    return ["--since", since, "--to-label", "class=deathstar", "--protocol", "tcp", "--all"]
