"""What Septum's pods leave on the lab's nodes (septum.lab.nodestate): found and removed for the
lab's node names only, pins included (files of bpffs, removed as such)."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from septum.lab import config, nodestate
from septum.lab.layout import StateDir


@pytest.fixture()
def bpffs_root() -> Iterator[Path]:
    root = Path("/sys/fs/bpf") / f"septest-nodestate-{uuid.uuid4().hex[:8]}"
    root.mkdir()
    try:
        yield root
    finally:
        subprocess.run(["rm", "-rf", str(root)], check=False)


def test_node_names() -> None:
    assert config.is_node_name("slab-node1") and config.is_node_name("slab-node120")
    assert not config.is_node_name("slab-node") and not config.is_node_name("node1")
    assert not config.is_node_name("slab-node1-old")


@pytest.mark.privileged
def test_leftovers_of_the_lab_nodes_are_listed_then_removed(
    tmp_path: Path, bpffs_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_root, lib_root = tmp_path / "run-septum", tmp_path / "var-lib-septum"
    monkeypatch.setattr(nodestate, "PER_NODE_ROOTS", (bpffs_root, run_root, lib_root))
    state = StateDir(tmp_path / "state")
    # An agent killed on node 1: its pins (a map, and a directory of them), socket dir, records.
    pins = bpffs_root / "slab-node1"
    (pins / "links").mkdir(parents=True)
    for pin in (pins / "septum_ipcache", pins / "links" / "septum_tc"):
        subprocess.run(
            ["bpftool", "map", "create", str(pin), "type", "array",
             "key", "4", "value", "4", "entries", "1", "name", "septest"],
            check=True, capture_output=True,
        )  # fmt: skip
    (run_root / "slab-node1").mkdir(parents=True)
    (run_root / "slab-node1" / "agent.sock").touch()
    (lib_root / "slab-node2" / "endpoints").mkdir(parents=True)
    cni = state.node_dir("slab-node1") / "cni"
    (cni / "net.d").mkdir(parents=True)
    (cni / "bin").mkdir(parents=True)
    (cni / "net.d" / "10-slab.conflist").touch()  # the lab's own network: not Septum's
    (run_root / "other-node").mkdir()
    (bpffs_root / "x").mkdir()
    (cni / "net.d" / "05-septum.conflist").touch()
    (cni / "bin" / "septum-cni").touch()

    found = nodestate.septum_leftovers(state)
    assert found == [
        pins,
        run_root / "slab-node1",
        lib_root / "slab-node2",
        cni / "net.d" / "05-septum.conflist",
        cni / "bin" / "septum-cni",
    ]
    nodestate.remove_septum_leftovers(state)
    assert nodestate.septum_leftovers(state) == []
    assert not pins.exists()
    # What is not Septum's on a lab node stays.
    assert (cni / "net.d" / "10-slab.conflist").exists()
    assert (run_root / "other-node").exists() and (bpffs_root / "x").exists()
