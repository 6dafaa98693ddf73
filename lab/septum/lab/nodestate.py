"""What Septum, run as the lab's own pods (the Helm chart's agent), leaves on the lab's nodes.

An agent that crashed, or was killed when the lab went down, leaves its BPF pins under
/sys/fs/bpf/septum/<node>, its sockets under /run/septum/<node>, its endpoint records under
/var/lib/septum/<node>, and its chained conflist and plugin in the node's CNI directories.
The lab's nodes share one host, so each keeps these under its node name; they belong to the
lab: ``lab down`` removes them and ``leftovers`` lists them.

Agents run as plain processes by other tests use the same node names; they are gone by the
time the lab goes down (the last test session out takes it down).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Final

from septum.agent.cni import CONFLIST_NAME, PLUGIN_TYPE
from septum.lab import config
from septum.lab.layout import StateDir

# The agent's defaults (septum.agent.daemon.AgentOptions, septum.dataplane.config) and the
# chart's hostPath volumes: each holds one directory per node, named after it.
PER_NODE_ROOTS: Final = (Path("/sys/fs/bpf/septum"), Path("/run/septum"), Path("/var/lib/septum"))


def _node_dirs(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if config.is_node_name(p.name))


def _cni_files(state: StateDir) -> list[Path]:
    """Septum's conflist and plugin in each lab node's CNI directories (``Kubelet.host_paths``:
    what the node's pods see as /etc/cni/net.d and /opt/cni/bin)."""
    found = []
    for node_dir in sorted(state.root.glob("nodes/*")):
        for path in (
            node_dir / "cni" / "net.d" / CONFLIST_NAME,
            node_dir / "cni" / "bin" / PLUGIN_TYPE,
        ):
            if path.exists():
                found.append(path)
    return found


def septum_leftovers(state: StateDir) -> list[Path]:
    """Every path Septum left on the lab's nodes (empty when there is nothing)."""
    per_node = [d for root in PER_NODE_ROOTS for d in _node_dirs(root)]
    return [*per_node, *_cni_files(state)]


def remove_septum_leftovers(state: StateDir) -> None:
    """Removes what ``septum_leftovers`` lists: pins (unlinked, as files of bpffs), the
    per-node directories and the CNI files."""
    for path in septum_leftovers(state):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
