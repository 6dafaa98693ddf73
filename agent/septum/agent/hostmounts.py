"""Pins must outlive the agent: keep them on the host's bpffs.

`ip netns exec` gives its command a private mount namespace with a fresh /sys and no
bpffs; a bpffs mounted there dies with the agent, and with it every pinned map and link
(the pods' programs would be detached).  So an agent started that way joins the host's
mount namespace first (pid 1's, or the nearest ancestor's that has bpffs): its network
namespace stays the node's.  setns() of a mount namespace needs a single-threaded
process, so this runs before anything starts.

In a pod (the in-cluster service account, no --kubeconfig) the agent never joins: the host's
mount namespace has none of the container's files (the service-account token and CA, the
TLS files, the hostPath mounts at their container paths), so everything after the join
would fail in confusing ways.  The DaemonSet mounts the node's /sys/fs/bpf instead; without
it the agent stops at once and says so (a private bpffs would lose every pin, and detach
every pod, at each restart).
"""

from __future__ import annotations

import ctypes
import logging
import os
from pathlib import Path
from typing import Final

from septum.agent.errors import HostMountError

log = logging.getLogger(__name__)

CLONE_NEWNS: Final = 0x00020000
BPFFS: Final = Path("/sys/fs/bpf")


def bpffs_mounted(pid: str = "self", path: Path = BPFFS) -> bool:
    """Whether process `pid`'s mount namespace has bpffs at `path`."""
    try:
        mountinfo = Path(f"/proc/{pid}/mountinfo").read_text()
    except OSError:
        return False
    for line in mountinfo.splitlines():
        fields, _, after = line.partition(" - ")
        parts = fields.split()
        if len(parts) > 4 and parts[4] == str(path) and after.split()[:1] == ["bpf"]:
            return True
    return False


def _parent(pid: str) -> str | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("PPid:"):
            parent = line.split()[1]
            return parent if parent != "0" else None
    return None


def host_mount_source() -> str | None:
    """The nearest ancestor whose mount namespace (other than ours) has bpffs and can be
    joined: pid 1 where we may read it, else the process that started us (e.g. the shell
    that ran `ip netns exec`)."""
    own = os.readlink("/proc/self/ns/mnt")
    pid: str | None = _parent("self")
    while pid is not None:
        try:
            theirs = os.readlink(f"/proc/{pid}/ns/mnt")
        except OSError:
            theirs = own  # not ours to read: keep walking up
        if theirs != own and bpffs_mounted(pid):
            return pid
        pid = _parent(pid)
    return None


def join_host_mount_namespace(may_join: bool = True) -> bool:
    """Join an ancestor's mount namespace when ours has no bpffs; True if joined.  With
    `may_join` false (in a pod) a missing bpffs is a HostMountError."""
    if bpffs_mounted():
        return False
    if not may_join:
        raise HostMountError(
            f"{BPFFS} is not a bpffs mount: mount the node's {BPFFS} into the agent's "
            "container (hostPath, mountPropagation: HostToContainer or Bidirectional); "
            "pins in a bpffs of the container's own would die with it. In-cluster the "
            "agent does not join the host's mount namespace: its service-account token, "
            "TLS files and volume mounts are not there"
        )
    source = host_mount_source()
    if source is None:
        return False  # the datapath mounts bpffs itself (pins then live as long as we do)
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/proc/{source}/ns/mnt", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNS) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns into the host's mount namespace: {os.strerror(err)}")
    finally:
        os.close(fd)
    os.chdir("/")
    log.info("joined the mount namespace of pid %s (pins outlive this process)", source)
    return True
