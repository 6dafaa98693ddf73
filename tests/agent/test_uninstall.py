"""What an uninstall removes from the node's filesystem (the API and datapath parts run in
the lab: test_agent_cluster_lab.py)."""

from __future__ import annotations

import json
from pathlib import Path

from septum.agent import cni
from septum.agent.uninstall import remove_directories


def test_cni_uninstall_removes_only_what_install_wrote(tmp_path: Path) -> None:
    conf, bin_dir = tmp_path / "net.d", tmp_path / "bin"
    conf.mkdir()
    network = {"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "ptp"}]}
    (conf / "10-node.conflist").write_text(json.dumps(network))
    cni.install(conf, bin_dir, tmp_path / "agent.sock", "/usr/bin/python3")
    (bin_dir / "ptp").write_text("the node's own plugin")
    removed = cni.uninstall(conf, bin_dir)
    assert removed == [conf / cni.CONFLIST_NAME, bin_dir / cni.PLUGIN_TYPE]
    assert sorted(p.name for p in conf.iterdir()) == ["10-node.conflist"]
    assert sorted(p.name for p in bin_dir.iterdir()) == ["ptp"]
    assert cni.uninstall(conf, bin_dir) == []  # idempotent


def test_directories_go_with_their_parent_once_it_is_empty(tmp_path: Path) -> None:
    run, state = tmp_path / "run" / "node1", tmp_path / "state" / "node1"
    (run / "x").mkdir(parents=True)
    (state / "endpoints").mkdir(parents=True)
    (tmp_path / "state" / "node2").mkdir()  # another node's (the lab runs several)
    removed = remove_directories([run, state, tmp_path / "never"])
    assert removed == [str(run), str(run.parent), str(state)]
    assert not run.parent.exists() and (tmp_path / "state" / "node2").is_dir()
