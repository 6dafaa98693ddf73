"""Host mounts under /sys carried into a container's mount namespace as a cloned mount tree.

A container starts through ``ip netns exec``, which unshares the mount namespace and mounts a
fresh sysfs at /sys (one that describes the network namespace): every mount below the host's
/sys (bpffs at /sys/fs/bpf, the cgroup hierarchies) is gone there, so a bind of hostPath
/sys/fs/bpf would bind sysfs's empty directory. The kubelet, which stays in the host's mount
namespace, clones the host's tree instead (``clone_tree``: open_tree(2) with OPEN_TREE_CLONE |
AT_RECURSIVE, a detached copy held by a file descriptor) and the container's start script
attaches it at the mountPath with move_mount(2) (``python -m septum.lab.kubelet.attachmount``),
then execs the container's command. A clone is the same filesystem, not a copy of its files:
a pin made on either side is seen on the other.

The detached tree lives as long as its descriptor or the namespace it was attached to: the
kubelet closes its descriptor after the start, this helper closes its own before the exec, so
the mount goes with the container's namespace (its last process) and nothing is left to clean.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

# Since Linux 5.2 these syscalls have the same number on every architecture (the unified
# numbering from 424 on), and Debian 12's glibc 2.36 wrappers are not in every libc we meet.
SYS_OPEN_TREE: Final = 428
SYS_MOVE_MOUNT: Final = 429
SYS_MOUNT_SETATTR: Final = 442
AT_FDCWD: Final = -100
AT_EMPTY_PATH: Final = 0x1000
AT_RECURSIVE: Final = 0x8000
OPEN_TREE_CLONE: Final = 1
OPEN_TREE_CLOEXEC: Final = os.O_CLOEXEC
MOVE_MOUNT_F_EMPTY_PATH: Final = 0x4
MOUNT_ATTR_RDONLY: Final = 0x1
MS_REC: Final = 0x4000
MS_PRIVATE: Final = 1 << 18
MS_SLAVE: Final = 1 << 19
MS_SHARED: Final = 1 << 20

# Kubernetes' mountPropagation values and the propagation they give the container's mount
# (as runc applies them: None -> rprivate, HostToContainer -> rslave, Bidirectional -> rshared).
PROPAGATION: Final = {
    "None": MS_REC | MS_PRIVATE,
    "HostToContainer": MS_REC | MS_SLAVE,
    "Bidirectional": MS_REC | MS_SHARED,
}

SYSFS: Final = Path("/sys")


class _MountAttr(ctypes.Structure):
    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def under_sysfs(path: Path) -> bool:
    """True for /sys and anything below it: what ``ip netns exec`` hides from a container."""
    return path == SYSFS or SYSFS in path.parents


def clone_tree(path: Path) -> int:
    """A descriptor holding a detached copy of the mount tree at ``path`` (this process's
    mount namespace), with every mount below it; close-on-exec until it is passed on."""
    return _check(
        _libc.syscall(
            SYS_OPEN_TREE,
            ctypes.c_int(AT_FDCWD),
            os.fsencode(path),
            ctypes.c_uint(OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE),
        ),
        f"open_tree {path}",
    )


def attach(tree_fd: int, mount_path: str, propagation: str, read_only: bool) -> None:
    """Attaches the detached tree ``tree_fd`` at ``mount_path`` in this mount namespace."""
    flags = PROPAGATION[propagation]
    if read_only:
        attr = _MountAttr(attr_set=MOUNT_ATTR_RDONLY)
        _check(
            _libc.syscall(
                SYS_MOUNT_SETATTR,
                ctypes.c_int(tree_fd),
                b"",
                ctypes.c_uint(AT_EMPTY_PATH | AT_RECURSIVE),
                ctypes.byref(attr),
                ctypes.c_size_t(ctypes.sizeof(attr)),
            ),
            f"mount_setattr read-only {mount_path}",
        )
    _check(
        _libc.syscall(
            SYS_MOVE_MOUNT,
            ctypes.c_int(tree_fd),
            b"",
            ctypes.c_int(AT_FDCWD),
            os.fsencode(mount_path),
            ctypes.c_uint(MOVE_MOUNT_F_EMPTY_PATH),
        ),
        f"move_mount to {mount_path}",
    )
    # The clone joined the source's peer group if the host's mount is shared, and is private
    # if it is not (as on hosts without systemd): set what the pod asked for either way.
    _check(
        _libc.mount(None, os.fsencode(mount_path), None, ctypes.c_ulong(flags), None),
        f"mount propagation {propagation} {mount_path}",
    )


@dataclass(frozen=True)
class TreeMount:
    """One cloned tree for the start script: descriptor, mountPath and how it is mounted."""

    tree_fd: int
    mount_path: str
    propagation: str = "None"
    read_only: bool = False

    def argv(self) -> list[str]:
        mode = "ro" if self.read_only else "rw"
        return ["--mount", str(self.tree_fd), self.mount_path, self.propagation, mode]


def exec_argv(mounts: Sequence[TreeMount], workdir: str) -> list[str]:
    """The start script's last word: attach ``mounts``, enter ``workdir``, exec the command
    (the script's "$@" follows)."""
    argv = [sys.executable, "-m", "septum.lab.kubelet.attachmount"]
    for mount in mounts:
        argv += mount.argv()
    if workdir:
        argv += ["--workdir", workdir]
    return [*argv, "--"]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m septum.lab.kubelet.attachmount")
    parser.add_argument(
        "--mount",
        nargs=4,
        action="append",
        default=[],
        metavar=("FD", "DST", "PROPAGATION", "ro|rw"),
        help="attach the detached tree FD at DST",
    )
    parser.add_argument("--workdir", default="", help="change here before the exec (if it can)")
    parser.add_argument("command", nargs="+", help="what to exec once the trees are attached")
    args = parser.parse_args(argv)
    for fd_text, mount_path, propagation, mode in args.mount:
        if propagation not in PROPAGATION:
            parser.error(f"--mount {mount_path}: unknown propagation {propagation!r}")
        tree_fd = int(fd_text)
        try:
            attach(tree_fd, mount_path, propagation, mode == "ro")
        except OSError as err:
            sys.exit(f"septum lab: cannot mount the host's tree at {mount_path}: {err}")
        os.close(tree_fd)
    if args.workdir:
        try:
            os.chdir(args.workdir)
        except OSError:
            pass  # as the script's `cd ... || true`: a missing workingDir is not fatal here
    try:
        os.execvp(args.command[0], args.command)
    except OSError as err:
        sys.exit(f"septum lab: cannot run {args.command[0]}: {err}")


if __name__ == "__main__":
    main()
