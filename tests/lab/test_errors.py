"""The one-line errors a user can hit before a lab starts."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from septum.lab import config, lab
from septum.lab.errors import PortInUseError

SEPTUM = str(Path(sys.executable).parent / "septum")


@pytest.mark.privileged  # the owner of another process's socket is visible to root only
def test_port_in_use_names_port_and_owner(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        monkeypatch.setattr(config, "HOST_PORTS", {"kube-apiserver": port})
        with pytest.raises(PortInUseError) as err:
            lab._check_ports()
    assert f"port {port} (kube-apiserver) is already in use by " in str(err.value)
    assert f"(pid {os.getpid()})" in str(err.value)


# The real entry point as a real non-root uid (65534). That uid keeps one capability,
# CAP_DAC_READ_SEARCH, so that it can read the interpreter, the venv and the checkout wherever
# they are: a checkout cloned into a private (mode 700) folder is unreadable to plain 65534,
# whose run would then end in "Permission denied" before the CLI's own check. The check under
# test looks only at the effective uid, which no capability changes.
UNPRIVILEGED_READER = [
    "setpriv",
    "--reuid=65534",
    "--regid=65534",
    "--clear-groups",
    "--inh-caps=-all,+dac_read_search",
    "--ambient-caps=-all,+dac_read_search",
    "--bounding-set=-all,+dac_read_search",
    "--no-new-privs",
]


@pytest.mark.privileged
def test_not_root_is_one_clear_line() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to an unprivileged user")
    out = subprocess.run(
        [*UNPRIVILEGED_READER, SEPTUM, "lab", "up"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "HOME": "/tmp"},
    )
    assert out.returncode == 1
    assert (
        out.stderr == "septum lab: the lab needs root (network namespaces, bridges, iptables): "
        "rerun with sudo\n"
    )


def test_missing_binaries_say_how_to_build(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from septum.lab.binaries import locate
    from septum.lab.errors import BinariesMissingError

    monkeypatch.setenv("SEPTUM_CACHE", str(tmp_path))
    with pytest.raises(BinariesMissingError, match="run 'make gobuild'"):
        locate()
