"""Run a block of code with the calling thread inside a named network namespace.

Interface indexes, tcx/XDP link creation and libbpf's tc netlink calls all act in the
caller's network namespace, and lab nodes are namespaces: this is how the datapath of a
node that is a namespace attaches to that node's interfaces.  Only the calling thread
moves (setns on a thread), and it always moves back.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

from septum.dataplane.errors import NamespaceError

CLONE_NEWNET: Final = 0x40000000
NETNS_RUN_DIR: Final = Path("/run/netns")

_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise NamespaceError(f"setns into a network namespace failed: {os.strerror(err)}")


@contextmanager
def entered(name: str | None) -> Iterator[None]:
    """Inside the block the thread is in netns `name` (None: stay where it is)."""
    if name is None:
        yield
        return
    path = NETNS_RUN_DIR / name
    if not path.exists():
        raise NamespaceError(f"network namespace {name!r} does not exist ({path})")
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(path, os.O_RDONLY)
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(target)
        os.close(own)
