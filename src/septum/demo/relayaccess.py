"""localhost:4245 is the relay, as `cilium hubble port-forward` makes it for Cilium users.

`septum port-forward --background` forwards it to the relay Service; it is a lab process, so
`septum lab down` stops it. A forward already listening there is left alone.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from septum.demo.errors import DemoError
from septum.demo.waiting import until
from septum.lab.lab import Lab

RELAY_PORT = 4245
RELAY_LOCAL = f"localhost:{RELAY_PORT}"
SEPTUM = str(Path(sys.executable).parent / "septum")


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def forward_relay(lab: Lab, namespace: str, port: int = RELAY_PORT) -> None:
    if _listening(port):
        return
    proc = subprocess.run(
        [SEPTUM, "port-forward", f"--kubeconfig={lab.kubeconfig}", "-n", namespace,
         "svc/septum-relay", f"{port}:80", "--background"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        raise DemoError(f"septum port-forward to the relay: {proc.stderr.strip()}")
    until(f"the relay forward on localhost:{port}", lambda: _listening(port), 20)
