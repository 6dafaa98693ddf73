"""Attach and detach the datapath's programs: tc (tcx links, or clsact filters where the
kernel has no tcx) and XDP (links).

tcx or clsact is decided by probing the kernel once (a tcx link on the first interface we
attach to), never by its version string.  Links are pinned under the node's pin directory
(``links/``) so that the datapath keeps enforcing while the agent restarts; detaching
removes the pin and the link.

Where there is no tcx, the clsact qdisc is created through libbpf and removed again only
if this process created it, once its last Septum filter is gone (as libbpf-bootstrap's
``tc.c`` does): a clsact hook that was there before us may carry other filters.
"""

from __future__ import annotations

import ctypes
import errno
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

from septum.dataplane.errors import AttachError
from septum.dataplane.libbpf import (
    BPF_TC_EGRESS,
    BPF_TC_F_REPLACE,
    BPF_TC_INGRESS,
    BPF_TCX_EGRESS,
    BPF_TCX_INGRESS,
    BPF_XDP,
    XDP_FLAGS_DRV_MODE,
    XDP_FLAGS_SKB_MODE,
    BpfLinkCreateOpts,
    BpfTcHook,
    BpfTcOpts,
    lib,
)

TcHook = Literal["ingress", "egress"]
XdpMode = Literal["auto", "native", "generic"]
_TCX_ATTACH: Final[dict[str, int]] = {"ingress": BPF_TCX_INGRESS, "egress": BPF_TCX_EGRESS}
_TC_POINT: Final[dict[str, int]] = {"ingress": BPF_TC_INGRESS, "egress": BPF_TC_EGRESS}
_XDP_FLAGS: Final[dict[str, int]] = {
    "auto": 0,
    "native": XDP_FLAGS_DRV_MODE,
    "generic": XDP_FLAGS_SKB_MODE,
}
# The clsact qdisc: the hook of both attach points.
_CLSACT: Final = BPF_TC_INGRESS | BPF_TC_EGRESS
# Kernel-internal "not supported" (no Python errno name).
_ENOTSUPP: Final = 524
# Errors that mean "this kernel has no tcx" rather than "this attach failed".
_NO_TCX: Final = {errno.EINVAL, errno.EOPNOTSUPP, _ENOTSUPP}
# Errors of a detach whose interface or hook is already gone: detached all the same.
_ALREADY_GONE: Final = {errno.ENOENT, errno.ENODEV, errno.EINVAL}
# clsact filter identity Septum owns on each hook.
_TC_HANDLE: Final = 0x5E97
_TC_PRIORITY: Final = 1

_tcx_available: bool | None = None


def tcx_available() -> bool | None:
    """What the probe found: True (tcx links), False (clsact), None (not probed yet)."""
    return _tcx_available


@dataclass(frozen=True)
class Attachment:
    """One attached program: a pinned link, or a clsact filter on (ifindex, hook)."""

    ifindex: int
    hook: str  # "ingress", "egress" or "xdp"
    kind: Literal["tcx", "clsact", "xdp"]
    pin: Path | None


def _pin_link(fd: int, pin: Path) -> None:
    pin.parent.mkdir(parents=True, exist_ok=True)
    if pin.exists():
        pin.unlink()
    result = lib().bpf_obj_pin(fd, str(pin).encode())
    if result < 0:
        os.close(fd)
        raise AttachError(f"pinning link at {pin}: {os.strerror(-result)}")
    os.close(fd)


@dataclass
class _OwnedClsact:
    """Septum's filters on one interface's clsact hook, and whether this process made it."""

    created: bool
    hooks: set[str] = field(default_factory=set)


# (network namespace inode, ifindex) -> our filters there; interface indexes repeat across
# namespaces, and lab nodes are namespaces of one process.
_clsact_hooks: dict[tuple[int, int], _OwnedClsact] = {}


def _netns_inode() -> int:
    return os.stat("/proc/thread-self/ns/net").st_ino


def _clsact_hook(ifindex: int, attach_point: int) -> BpfTcHook:
    return BpfTcHook(sz=ctypes.sizeof(BpfTcHook), ifindex=ifindex, attach_point=attach_point)


def _create_clsact(ifindex: int) -> bool:
    """Make sure `ifindex` has a clsact qdisc; True when this call created it."""
    result = lib().bpf_tc_hook_create(ctypes.byref(_clsact_hook(ifindex, _CLSACT)))
    if result == -errno.EEXIST:
        return False
    if result < 0:
        raise AttachError(f"creating the clsact hook on ifindex {ifindex}: {os.strerror(-result)}")
    return True


def _attach_filter(prog_fd: int, ifindex: int, hook: TcHook) -> int:
    opts = BpfTcOpts(
        sz=ctypes.sizeof(BpfTcOpts),
        prog_fd=prog_fd,
        handle=_TC_HANDLE,
        priority=_TC_PRIORITY,
        flags=BPF_TC_F_REPLACE,  # re-attaching replaces our own filter
    )
    return int(
        lib().bpf_tc_attach(
            ctypes.byref(_clsact_hook(ifindex, _TC_POINT[hook])), ctypes.byref(opts)
        )
    )


def _clsact_attach(prog_fd: int, ifindex: int, hook: TcHook) -> None:
    key = (_netns_inode(), ifindex)
    owned = _clsact_hooks.get(key)
    if owned is None:
        # Only when none of our filters is there: libbpf logs a warning for a hook that
        # exists, which would otherwise come with the second hook of every pod.
        owned = _clsact_hooks[key] = _OwnedClsact(created=_create_clsact(ifindex))
    result = _attach_filter(prog_fd, ifindex, hook)
    if result < 0 and owned.hooks and _create_clsact(ifindex):
        # the hook our record speaks of is gone (its interface was replaced): a new one
        owned = _clsact_hooks[key] = _OwnedClsact(created=True)
        result = _attach_filter(prog_fd, ifindex, hook)
    if result < 0:
        if not owned.hooks:
            _release_clsact(key)
        raise AttachError(f"tc {hook} filter on ifindex {ifindex}: {os.strerror(-result)}")
    owned.hooks.add(hook)


def _release_clsact(key: tuple[int, int]) -> None:
    """Forget our last filter on the hook; destroy the hook if we created it."""
    owned = _clsact_hooks.pop(key)
    if not owned.created:
        return
    _, ifindex = key
    result = lib().bpf_tc_hook_destroy(ctypes.byref(_clsact_hook(ifindex, _CLSACT)))
    if result < 0 and -result not in _ALREADY_GONE:
        raise AttachError(f"removing the clsact hook of ifindex {ifindex}: {os.strerror(-result)}")


def _clsact_detach(ifindex: int, hook: str) -> None:
    opts = BpfTcOpts(sz=ctypes.sizeof(BpfTcOpts), handle=_TC_HANDLE, priority=_TC_PRIORITY)
    result = lib().bpf_tc_detach(
        ctypes.byref(_clsact_hook(ifindex, _TC_POINT[hook])), ctypes.byref(opts)
    )
    if result < 0 and -result not in _ALREADY_GONE:
        raise AttachError(
            f"detaching tc {hook} filter from ifindex {ifindex}: {os.strerror(-result)}"
        )
    key = (_netns_inode(), ifindex)
    owned = _clsact_hooks.get(key)
    if owned is not None:
        owned.hooks.discard(hook)
        if not owned.hooks:
            _release_clsact(key)


# struct bpf_link_info: type, id, prog_id, then a union 8-byte aligned whose tcx and xdp
# members both start with the interface index.
_LINK_INFO_BYTES: Final = 64
_LINK_INFO_IFINDEX: Final = 16


def _link_ifindex(link_fd: int) -> int | None:
    info = ctypes.create_string_buffer(_LINK_INFO_BYTES)
    size = ctypes.c_uint32(_LINK_INFO_BYTES)
    if lib().bpf_obj_get_info_by_fd(link_fd, info, ctypes.byref(size)) < 0:
        return None
    return int.from_bytes(info.raw[_LINK_INFO_IFINDEX : _LINK_INFO_IFINDEX + 4], "little")


def _update_pinned_link(pin: Path, prog_fd: int, ifindex: int) -> bool:
    """Swap `prog_fd` into the link pinned at `pin` (an earlier agent's attachment of the
    same hook): one atomic replacement, no moment without a program and none with two.
    False when there is no such pin, or its link is gone, sits on another interface (the
    pod got a new veth) or refuses the program."""
    if not pin.exists():
        return False
    link_fd = lib().bpf_obj_get(str(pin).encode())
    if link_fd < 0:
        return False
    try:
        if _link_ifindex(link_fd) != ifindex:
            return False
        return int(lib().bpf_link_update(link_fd, prog_fd, None)) == 0
    finally:
        os.close(link_fd)


def attach_tc(prog_fd: int, ifindex: int, hook: TcHook, pin: Path) -> Attachment:
    """Attach a tc program to `hook` of `ifindex` (in the caller's netns).  A link an
    earlier agent pinned for the same hook gets the program swapped in."""
    global _tcx_available
    if _tcx_available is not False and _update_pinned_link(pin, prog_fd, ifindex):
        return Attachment(ifindex, hook, "tcx", pin)
    if _tcx_available is not False:
        fd = lib().bpf_link_create(prog_fd, ifindex, _TCX_ATTACH[hook], None)
        if fd >= 0:
            _tcx_available = True
            _pin_link(fd, pin)
            return Attachment(ifindex, hook, "tcx", pin)
        if _tcx_available is None and -fd in _NO_TCX:
            _tcx_available = False
        else:
            raise AttachError(f"tcx {hook} link on ifindex {ifindex}: {os.strerror(-fd)}")
    _clsact_attach(prog_fd, ifindex, hook)
    return Attachment(ifindex, hook, "clsact", None)


def attach_xdp(prog_fd: int, ifindex: int, mode: XdpMode, pin: Path) -> Attachment:
    """Attach the XDP program to `ifindex`; the link an earlier agent pinned for it (which
    holds the interface: a second XDP link would be refused) gets the program swapped in."""
    if _update_pinned_link(pin, prog_fd, ifindex):
        return Attachment(ifindex, "xdp", "xdp", pin)
    opts = BpfLinkCreateOpts(sz=ctypes.sizeof(BpfLinkCreateOpts), flags=_XDP_FLAGS[mode])
    fd = lib().bpf_link_create(prog_fd, ifindex, BPF_XDP, ctypes.byref(opts))
    if fd < 0:
        raise AttachError(f"XDP ({mode}) link on ifindex {ifindex}: {os.strerror(-fd)}")
    _pin_link(fd, pin)
    return Attachment(ifindex, "xdp", "xdp", pin)


def detach(attachment: Attachment) -> None:
    """Detach (in the netns it was attached in); an interface that is already gone counts
    as detached."""
    if attachment.pin is not None:
        if attachment.pin.exists():
            attachment.pin.unlink()  # the last reference: the kernel detaches the link
        return
    _clsact_detach(attachment.ifindex, attachment.hook)
