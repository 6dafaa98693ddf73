"""hostPath volumes: created or checked as their ``type`` says, node-local paths swapped in."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest

from septum.lab.kubelet.volumes import HostPathError, host_path

WHERE = "spec.volumes[0].hostPath"
AT = re.escape(WHERE)


class Recorder:
    def __init__(self) -> None:
        self.created: list[tuple[Path, bool]] = []

    def __call__(self, path: Path, is_dir: bool) -> None:
        assert not path.exists(), "recorded only before it is created"
        self.created.append((path, is_dir))


@pytest.mark.parametrize("kind", ["", "DirectoryOrCreate"])
def test_a_missing_directory_is_created_and_recorded(tmp_path: Path, kind: str) -> None:
    wanted = tmp_path / "run" / "septum"
    record = Recorder()
    assert host_path({"path": f"{wanted}/", "type": kind}, WHERE, {}, record) == wanted
    assert wanted.is_dir()
    assert record.created == [(wanted, True)]
    # Present the next time: nothing more to record.
    assert host_path({"path": str(wanted), "type": kind}, WHERE, {}, record) == wanted
    assert len(record.created) == 1


def test_file_or_create_makes_an_empty_file(tmp_path: Path) -> None:
    wanted = tmp_path / "lib" / "xtables.lock"
    record = Recorder()
    host_path({"path": str(wanted), "type": "FileOrCreate"}, WHERE, {}, record)
    assert wanted.is_file() and wanted.stat().st_size == 0
    assert record.created == [(wanted, False)]


def test_node_local_paths_stand_in_for_the_hosts(tmp_path: Path) -> None:
    mine = tmp_path / "node1-net.d"
    got = host_path({"path": "/etc/cni/net.d/", "type": "DirectoryOrCreate"}, WHERE,
                    {"/etc/cni/net.d": mine}, Recorder())  # fmt: skip
    assert got == mine


def test_typed_paths_are_checked(tmp_path: Path) -> None:
    (tmp_path / "file").touch()
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(tmp_path / "sock"))
        assert host_path({"path": str(tmp_path / "sock"), "type": "Socket"}, WHERE, {}, Recorder())
    assert host_path({"path": str(tmp_path), "type": "Directory"}, WHERE, {}, Recorder())
    assert host_path({"path": "/dev/null", "type": "CharDevice"}, WHERE, {}, Recorder())
    with pytest.raises(HostPathError, match=rf"^{AT}\.type: {tmp_path}/file is not a Directory"):
        host_path({"path": str(tmp_path / "file"), "type": "Directory"}, WHERE, {}, Recorder())
    with pytest.raises(HostPathError, match=rf"^{AT}\.path: {tmp_path}/gone: No such file"):
        host_path({"path": str(tmp_path / "gone"), "type": "File"}, WHERE, {}, Recorder())
    with pytest.raises(HostPathError, match=rf"^{AT}\.type: unknown hostPath type 'Dir'"):
        host_path({"path": str(tmp_path), "type": "Dir"}, WHERE, {}, Recorder())
