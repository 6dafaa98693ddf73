"""Open, check, size, pin and load the datapath object through libbpf.

Maps are pinned under ``/sys/fs/bpf/septum/<node-name>/<map>``: per node, because several
lab nodes share one kernel, and pinned so that a restarted agent finds its conntrack table
and policy where it left them (libbpf reuses a compatible pinned map on load).

A pinned map whose definition (type, key size, value size, max entries, flags) differs
from the object's -- a newer object, or a capacity changed in DatapathConfig -- is never
reused: everything Septum pins can be rebuilt from the control plane, so the stale pin is
removed before the load, libbpf creates and pins a fresh map, and the map is named in a
warning and in ``LoadedObject.recreated`` (what Cilium does for most maps on upgrade).
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from septum.dataplane import abi
from septum.dataplane.btfcheck import check_mirrors
from septum.dataplane.config import DatapathConfig
from septum.dataplane.errors import DatapathError, LibbpfError, PrerequisiteError
from septum.dataplane.libbpf import (
    BpfMapInfo,
    check,
    check_ptr,
    last_verifier_log,
    lib,
    reset_verifier_log,
)
from septum.dataplane.libbpf import log as libbpf_log
from septum.dataplane.prereq import require_all

log = logging.getLogger(__name__)
_LIBBPF_LOGGER: Final = libbpf_log.name

# map name -> the DatapathConfig field that sizes it (None: fixed size)
MAP_SETTINGS: Final[dict[str, str | None]] = {
    abi.MAP_ENDPOINTS: "endpoints",
    abi.MAP_IPCACHE_HOST: "ipcache_hosts",
    abi.MAP_IPCACHE: "ipcache_cidrs",
    abi.MAP_POLICY: "policy_entries",
    abi.MAP_POLICY_RANGES: "policy_ranges",
    abi.MAP_CONNTRACK4: "conntrack_entries",
    abi.MAP_CONNTRACK6: "conntrack_entries",
    abi.MAP_FRAGMENTS: "fragment_entries",
    abi.MAP_DROP_RATELIMIT: "drop_ratelimit_entries",
    abi.MAP_PREFILTER: "prefilter_entries",
    abi.MAP_LOCAL_ADDRS: "local_addr_entries",
    abi.MAP_EVENTS: "ringbuf_bytes",
    abi.MAP_COUNTERS: None,
    abi.MAP_LOST_EVENTS: None,
    abi.MAP_CONFIG: None,
}

PROGRAMS: Final = (
    abi.PROG_FROM_POD,
    abi.PROG_TO_POD,
    abi.PROG_XDP_PREFILTER,
    abi.PROG_FROM_NETDEV,
    abi.PROG_TO_NETDEV,
    abi.PROG_BENCH_EMIT,
    abi.PROG_BENCH_EMPTY,
    abi.PROG_BENCH_NEW_FLOOR,
    abi.PROG_JIFFIES,
)


@dataclass(frozen=True)
class LoadedMap:
    name: str
    fd: int
    capacity: int
    setting: str


@dataclass(frozen=True)
class MapDefinition:
    """What libbpf compares before reusing a pinned map."""

    type: int
    key_size: int
    value_size: int
    max_entries: int
    flags: int
    extra: int

    def __str__(self) -> str:
        text = (
            f"type {self.type} key {self.key_size} value {self.value_size} "
            f"entries {self.max_entries} flags {self.flags:#x}"
        )
        return f"{text} extra {self.extra}" if self.extra else text


class LoadedObject:
    """A loaded ``struct bpf_object``: its maps and programs by name.  Closing it closes
    the file descriptors; pinned maps and pinned links stay in the kernel.  `recreated`
    names the maps whose incompatible pins were replaced by fresh (empty) maps."""

    def __init__(
        self,
        handle: int,
        maps: dict[str, LoadedMap],
        programs: dict[str, int],
        recreated: tuple[str, ...] = (),
    ):
        self._handle: int | None = handle
        self.maps = maps
        self.programs = programs
        self.recreated = recreated

    def close(self) -> None:
        if self._handle is not None:
            lib().bpf_object__close(self._handle)
            self._handle = None


def _open(path: Path) -> int:
    ctypes.set_errno(0)
    handle = lib().bpf_object__open_file(str(path).encode(), None)
    return check_ptr(handle, f"opening BPF object {path}")


def load(config: DatapathConfig) -> LoadedObject:
    """Load the object for `config.node_name`, reusing that node's pinned maps."""
    require_all(config.bpf_object)
    binding = lib()
    handle = _open(config.bpf_object)
    created_pin_dir = False
    try:
        btf = binding.bpf_object__btf(handle)
        if not btf:
            raise PrerequisiteError(
                f"BPF object {config.bpf_object} has no BTF: rebuild it with `make bpf`"
            )
        check_mirrors(btf, abi.MIRRORS)
        created_pin_dir = not config.pin_dir.exists()
        config.pin_dir.mkdir(parents=True, exist_ok=True)
        map_pointers: dict[str, int] = {}
        for name, setting in MAP_SETTINGS.items():
            pointer = check_ptr(
                binding.bpf_object__find_map_by_name(handle, name.encode()),
                f"finding map {name} in {config.bpf_object}",
            )
            map_pointers[name] = pointer
            if setting is not None:
                check(
                    binding.bpf_map__set_max_entries(pointer, getattr(config, setting)),
                    f"sizing map {name} from DatapathConfig.{setting}",
                )
            pin = str(config.pin_dir / name).encode()
            check(binding.bpf_map__set_pin_path(pointer, pin), f"pin path of map {name}")
        recreated = tuple(
            name
            for name, pointer in map_pointers.items()
            if _drop_incompatible_pin(config.pin_dir / name, expected_definition(pointer))
        )
        reset_verifier_log()
        result = binding.bpf_object__load(handle)
        if result < 0:
            _explain_load_failure(config, -result)
        maps = {
            name: LoadedMap(
                name=name,
                fd=check(binding.bpf_map__fd(pointer), f"fd of map {name}"),
                capacity=int(binding.bpf_map__max_entries(pointer)),
                setting=MAP_SETTINGS[name] or "(fixed)",
            )
            for name, pointer in map_pointers.items()
        }
        programs: dict[str, int] = {}
        for name in PROGRAMS:
            program = check_ptr(
                binding.bpf_object__find_program_by_name(handle, name.encode()),
                f"finding program {name} in {config.bpf_object}",
            )
            programs[name] = check(binding.bpf_program__fd(program), f"fd of program {name}")
    except BaseException:
        binding.bpf_object__close(handle)
        # libbpf unpins what a failed load pinned: leave no empty node directory behind
        if created_pin_dir and config.pin_dir.is_dir() and not any(config.pin_dir.iterdir()):
            config.pin_dir.rmdir()
        raise
    return LoadedObject(handle, maps, programs, recreated)


def expected_definition(pointer: int) -> MapDefinition:
    """The definition the object will create map `pointer` with (after sizing)."""
    binding = lib()
    return MapDefinition(
        type=int(binding.bpf_map__type(pointer)),
        key_size=int(binding.bpf_map__key_size(pointer)),
        value_size=int(binding.bpf_map__value_size(pointer)),
        max_entries=int(binding.bpf_map__max_entries(pointer)),
        flags=int(binding.bpf_map__map_flags(pointer)),
        extra=int(binding.bpf_map__map_extra(pointer)),
    )


def pinned_definition(pin: Path) -> MapDefinition:
    """The definition of the map pinned at `pin`, as the kernel reports it."""
    binding = lib()
    fd = check(binding.bpf_obj_get(str(pin).encode()), f"opening pinned map {pin}")
    try:
        info = BpfMapInfo()
        size = ctypes.c_uint32(ctypes.sizeof(info))
        check(
            binding.bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(size)),
            f"reading the definition of pinned map {pin}",
        )
    finally:
        os.close(fd)
    return MapDefinition(
        type=info.type,
        key_size=info.key_size,
        value_size=info.value_size,
        max_entries=info.max_entries,
        flags=info.map_flags,
        extra=info.map_extra,
    )


def _drop_incompatible_pin(pin: Path, expected: MapDefinition) -> bool:
    """Unpin `pin` when its map differs from `expected` (libbpf then creates a fresh map
    there); True when it did.  Reusing it would fail the load with a bare EINVAL, and all
    pinned state is rebuilt from the control plane, so replacing it is safe."""
    if not pin.exists():
        return False
    pinned = pinned_definition(pin)
    if pinned == expected:
        return False
    pin.unlink()
    log.warning(
        "BPF map %s: pinned map (%s) differs from the object's (%s): recreated empty, its "
        "state is rebuilt from the control plane",
        pin,
        pinned,
        expected,
    )
    return True


def _explain_load_failure(config: DatapathConfig, code: int) -> None:
    reason = os.strerror(code)
    verifier_log = last_verifier_log()
    # The capabilities were checked before the load (prereq.require_all): EACCES from a
    # program load is the verifier refusing a program, not a missing permission.
    if verifier_log is not None or code == errno.EACCES:
        where = (
            f"{verifier_log.program}; verifier log: {verifier_log.lines} lines, logged at "
            f"DEBUG by {_LIBBPF_LOGGER}"
            if verifier_log
            else f"libbpf's messages are logged by {_LIBBPF_LOGGER}"
        )
        raise LibbpfError(
            f"loading {config.bpf_object}: the verifier rejected a program ({where})",
            code,
            reason,
        )
    if code == errno.EINVAL and any((config.pin_dir / name).exists() for name in MAP_SETTINGS):
        raise DatapathError(
            f"loading {config.bpf_object} failed ({reason}): pinned maps under "
            f"{config.pin_dir} were created with other settings or another object version; "
            "tear the node's datapath down (NodeDatapath.teardown) or restore the settings"
        )
    if code == errno.EPERM:
        raise PrerequisiteError(
            f"the kernel refused to load {config.bpf_object} ({reason}): "
            "run as root with CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN"
        )
    raise LibbpfError(
        f"loading {config.bpf_object} (a kernel feature missing?  libbpf's messages are "
        f"logged by {_LIBBPF_LOGGER})",
        code,
        reason,
    )


def remove_pins(pin_dir: Path) -> None:
    """Remove a node's pins (maps and links) and its directory."""
    if not pin_dir.exists():
        return
    for path in sorted(pin_dir.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_dir():
            path.rmdir()
        else:
            path.unlink()
    pin_dir.rmdir()
