"""Fail at once, in one line, when something the datapath needs is missing."""

from __future__ import annotations

import ctypes
import os
from pathlib import Path
from typing import Final

from septum.dataplane.errors import PrerequisiteError

BPFFS: Final = Path("/sys/fs/bpf")
CAP_NET_ADMIN: Final = 12
CAP_SYS_ADMIN: Final = 21
CAP_PERFMON: Final = 38
CAP_BPF: Final = 39
# The object `make bpf` builds, relative to the repository (editable install) root; an installed
# package (the container image) names its copy in SEPTUM_BPF_OBJECT.
_REPO_ROOT: Final = Path(__file__).resolve().parents[3]
DEFAULT_OBJECT: Final = Path(
    os.environ.get("SEPTUM_BPF_OBJECT") or _REPO_ROOT / "build" / "bpf" / "septum.bpf.o"
)


def _effective_capabilities() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


def _missing_capabilities(caps: int) -> list[str]:
    """Names of what the load and attach need and `caps` lacks (CAP_SYS_ADMIN covers
    CAP_BPF and CAP_PERFMON, as it does in the kernel)."""

    def has(cap: int) -> bool:
        return bool(caps & (1 << cap))

    missing = []
    if not (has(CAP_BPF) or has(CAP_SYS_ADMIN)):
        missing.append("CAP_BPF")
    # Without CAP_PERFMON the verifier refuses pointer arithmetic on map values and
    # packets ("pointer arithmetic ... prohibited for !root"): the load would fail as a
    # verifier rejection, far from the cause.
    if not (has(CAP_PERFMON) or has(CAP_SYS_ADMIN)):
        missing.append("CAP_PERFMON")
    if not has(CAP_NET_ADMIN):
        missing.append("CAP_NET_ADMIN")
    return missing


def require_capabilities() -> None:
    missing = _missing_capabilities(_effective_capabilities())
    if missing:
        raise PrerequisiteError(
            "septum datapath needs CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN (or CAP_SYS_ADMIN "
            f"for the first two), missing {', '.join(missing)}: run it as root (sudo)"
        )


def _bpffs_mounted() -> bool:
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        before, _, after = line.partition(" - ")
        fields = before.split()
        if len(fields) > 4 and fields[4] == str(BPFFS) and after.split()[:1] == ["bpf"]:
            return True
    return False


def require_bpffs() -> None:
    """Mount bpffs at /sys/fs/bpf if it is not mounted yet."""
    if _bpffs_mounted():
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(b"bpf", str(BPFFS).encode(), b"bpf", 0, None) != 0:
        err = ctypes.get_errno()
        raise PrerequisiteError(
            f"bpffs is not mounted at {BPFFS} and mounting it failed ({os.strerror(err)}): "
            f"run `mount -t bpf bpf {BPFFS}` as root"
        )


def require_object(path: Path) -> Path:
    if not path.is_file():
        raise PrerequisiteError(f"BPF object {path} is not built: run `make bpf`")
    return path


def require_all(object_path: Path) -> None:
    """Every check, in the order a user would fix them."""
    require_capabilities()
    require_object(object_path)
    require_bpffs()
