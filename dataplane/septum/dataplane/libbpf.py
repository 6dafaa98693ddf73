"""Thin typed ctypes binding over the system libbpf (``libbpf.so.1``).

Only what Septum uses is declared, with argument and result types, so a wrong call fails
in ctypes instead of in libbpf.  libbpf 1.x returns ``-errno`` from int functions and
``NULL`` (with ``errno`` set) from pointer functions; :func:`check` turns both into
:class:`~septum.dataplane.errors.LibbpfError` naming the operation.

Constants the Debian 6.1 UAPI headers lack (tcx attach types) are defined here; whether
the running kernel has them is decided by probing (see ``septum.dataplane.attach``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Callable
from typing import Any, Final

from septum.dataplane.errors import LibbpfError, PrerequisiteError

# enum bpf_attach_type values Septum uses (linux/bpf.h).
BPF_XDP: Final = 37
BPF_TCX_INGRESS: Final = 46
BPF_TCX_EGRESS: Final = 47
# enum bpf_tc_attach_point (libbpf.h).
BPF_TC_INGRESS: Final = 1
BPF_TC_EGRESS: Final = 2
# XDP attach flags (linux/if_link.h).
XDP_FLAGS_SKB_MODE: Final = 1 << 1
XDP_FLAGS_DRV_MODE: Final = 1 << 2
# map update flags
BPF_ANY: Final = 0
BPF_NOEXIST: Final = 1
BPF_EXIST: Final = 2
# btf kinds
BTF_KIND_STRUCT: Final = 4

_LIBRARY_NAME: Final = "libbpf.so.1"


class BpfTestRunOpts(ctypes.Structure):
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("data_in", ctypes.c_void_p),
        ("data_out", ctypes.c_void_p),
        ("data_size_in", ctypes.c_uint32),
        ("data_size_out", ctypes.c_uint32),
        ("ctx_in", ctypes.c_void_p),
        ("ctx_out", ctypes.c_void_p),
        ("ctx_size_in", ctypes.c_uint32),
        ("ctx_size_out", ctypes.c_uint32),
        ("retval", ctypes.c_uint32),
        ("repeat", ctypes.c_int),
        ("duration", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("cpu", ctypes.c_uint32),
        ("batch_size", ctypes.c_uint32),
    ]


class BpfMapBatchOpts(ctypes.Structure):
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("elem_flags", ctypes.c_uint64),
        ("flags", ctypes.c_uint64),
    ]


class BpfLinkCreateOpts(ctypes.Structure):
    # Only the leading fields Septum sets; sz tells libbpf how much of the struct we know.
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("flags", ctypes.c_uint32),
        ("iter_info", ctypes.c_void_p),
        ("iter_info_len", ctypes.c_uint32),
        ("target_btf_id", ctypes.c_uint32),
    ]


class BpfTcHook(ctypes.Structure):
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("ifindex", ctypes.c_int),
        ("attach_point", ctypes.c_int),
        ("parent", ctypes.c_uint32),
        ("_pad", ctypes.c_uint32),
    ]


class BpfTcOpts(ctypes.Structure):
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("prog_fd", ctypes.c_int),
        ("flags", ctypes.c_uint32),
        ("prog_id", ctypes.c_uint32),
        ("handle", ctypes.c_uint32),
        ("priority", ctypes.c_uint32),
        ("_pad", ctypes.c_uint32),
    ]


class BpfMapInfo(ctypes.Structure):
    # struct bpf_map_info (linux/bpf.h) up to map_extra; the kernel fills what it knows.
    _fields_ = [
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("key_size", ctypes.c_uint32),
        ("value_size", ctypes.c_uint32),
        ("max_entries", ctypes.c_uint32),
        ("map_flags", ctypes.c_uint32),
        ("name", ctypes.c_char * 16),
        ("ifindex", ctypes.c_uint32),
        ("btf_vmlinux_value_type_id", ctypes.c_uint32),
        ("netns_dev", ctypes.c_uint64),
        ("netns_ino", ctypes.c_uint64),
        ("btf_id", ctypes.c_uint32),
        ("btf_key_type_id", ctypes.c_uint32),
        ("btf_value_type_id", ctypes.c_uint32),
        ("_pad", ctypes.c_uint32),
        ("map_extra", ctypes.c_uint64),
    ]


class BtfType(ctypes.Structure):
    _fields_ = [("name_off", ctypes.c_uint32), ("info", ctypes.c_uint32), ("size", ctypes.c_uint32)]


class BtfMember(ctypes.Structure):
    _fields_ = [
        ("name_off", ctypes.c_uint32),
        ("type", ctypes.c_uint32),
        ("offset", ctypes.c_uint32),
    ]


_vp = ctypes.c_void_p
_int = ctypes.c_int
_u32 = ctypes.c_uint32
_u64 = ctypes.c_uint64
_str = ctypes.c_char_p

# name: (restype, argtypes)
_PROTOTYPES: Final[dict[str, tuple[object, list[object]]]] = {
    "bpf_object__open_file": (_vp, [_str, _vp]),
    "bpf_object__load": (_int, [_vp]),
    "bpf_object__close": (None, [_vp]),
    "bpf_object__btf": (_vp, [_vp]),
    "bpf_object__find_map_by_name": (_vp, [_vp, _str]),
    "bpf_object__find_program_by_name": (_vp, [_vp, _str]),
    "bpf_map__set_max_entries": (_int, [_vp, _u32]),
    "bpf_map__max_entries": (_u32, [_vp]),
    "bpf_map__set_pin_path": (_int, [_vp, _str]),
    "bpf_map__fd": (_int, [_vp]),
    "bpf_map__type": (_int, [_vp]),
    "bpf_map__key_size": (_u32, [_vp]),
    "bpf_map__value_size": (_u32, [_vp]),
    "bpf_map__map_flags": (_u32, [_vp]),
    "bpf_map__map_extra": (_u64, [_vp]),
    "bpf_map__unpin": (_int, [_vp, _str]),
    "bpf_program__fd": (_int, [_vp]),
    "bpf_program__set_autoload": (_int, [_vp, ctypes.c_bool]),
    "bpf_map_lookup_elem": (_int, [_int, _vp, _vp]),
    "bpf_map_update_elem": (_int, [_int, _vp, _vp, _u64]),
    "bpf_map_delete_elem": (_int, [_int, _vp]),
    "bpf_map_get_next_key": (_int, [_int, _vp, _vp]),
    "bpf_map_lookup_batch": (_int, [_int, _vp, _vp, _vp, _vp, ctypes.POINTER(_u32), _vp]),
    "bpf_map_update_batch": (_int, [_int, _vp, _vp, ctypes.POINTER(_u32), _vp]),
    "bpf_map_delete_batch": (_int, [_int, _vp, ctypes.POINTER(_u32), _vp]),
    "bpf_prog_test_run_opts": (_int, [_int, ctypes.POINTER(BpfTestRunOpts)]),
    "bpf_link_create": (_int, [_int, _int, _int, _vp]),
    "bpf_obj_pin": (_int, [_int, _str]),
    "bpf_obj_get": (_int, [_str]),
    "bpf_link_update": (_int, [_int, _int, _vp]),
    "bpf_obj_get_info_by_fd": (_int, [_int, _vp, ctypes.POINTER(_u32)]),
    "bpf_tc_hook_create": (_int, [ctypes.POINTER(BpfTcHook)]),
    "bpf_tc_hook_destroy": (_int, [ctypes.POINTER(BpfTcHook)]),
    "bpf_tc_attach": (_int, [ctypes.POINTER(BpfTcHook), ctypes.POINTER(BpfTcOpts)]),
    "bpf_tc_detach": (_int, [ctypes.POINTER(BpfTcHook), ctypes.POINTER(BpfTcOpts)]),
    "btf__find_by_name_kind": (_int, [_vp, _str, _u32]),
    "btf__type_by_id": (ctypes.POINTER(BtfType), [_vp, _u32]),
    "btf__name_by_offset": (_str, [_vp, _u32]),
    "libbpf_num_possible_cpus": (_int, []),
}


class Libbpf:
    """The loaded library with typed functions as attributes (``lib.bpf_map__fd(...)``)."""

    def __init__(self, path: str | None = None) -> None:
        name = path or ctypes.util.find_library("bpf") or _LIBRARY_NAME
        try:
            self._cdll = ctypes.CDLL(name if name.endswith(".1") else _LIBRARY_NAME, use_errno=True)
        except OSError as err:
            raise PrerequisiteError(
                f"libbpf not found ({_LIBRARY_NAME}): install it with `apt-get install libbpf1` "
                "(make deps does)"
            ) from err
        for function, (restype, argtypes) in _PROTOTYPES.items():
            fn = getattr(self._cdll, function)
            fn.restype = restype
            fn.argtypes = argtypes
            setattr(self, function, fn)

    def __getattr__(self, name: str) -> Callable[..., Any]:  # reached for undeclared names only
        raise AttributeError(f"libbpf function {name} is not declared in septum.dataplane.libbpf")


_instance: Libbpf | None = None


def lib() -> Libbpf:
    """The process-wide binding (loaded on first use)."""
    global _instance
    if _instance is None:
        _instance = Libbpf()
    return _instance


def check(result: int, operation: str) -> int:
    """Raise LibbpfError for a negative libbpf return code; return it otherwise."""
    if result < 0:
        code = -result
        raise LibbpfError(operation, code, os.strerror(code))
    return result


def check_ptr(pointer: int | None, operation: str) -> int:
    """Raise LibbpfError for a NULL pointer result (errno holds the cause)."""
    if not pointer:
        code = ctypes.get_errno() or 22
        raise LibbpfError(operation, code, os.strerror(code))
    return pointer
