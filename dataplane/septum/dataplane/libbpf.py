"""Thin typed ctypes binding over the system libbpf (``libbpf.so.1``).

Only what Septum uses is declared, with argument and result types, so a wrong call fails
in ctypes instead of in libbpf.  libbpf 1.x returns ``-errno`` from int functions and
``NULL`` (with ``errno`` set) from pointer functions; :func:`check` turns both into
:class:`~septum.dataplane.errors.LibbpfError` naming the operation.

Constants the Debian 6.1 UAPI headers lack (tcx attach types) are defined here; whether
the running kernel has them is decided by probing (see ``septum.dataplane.attach``).

libbpf's messages go to the logger ``septum.dataplane.libbpf`` instead of stderr (see
:func:`_install_print`), and the verifier log of the last rejected program is kept for the
error that reports the rejection (:func:`last_verifier_log`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import platform
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from septum.dataplane.errors import LibbpfError, PrerequisiteError

# enum bpf_attach_type values Septum uses (linux/bpf.h).
BPF_XDP: Final = 37
BPF_TCX_INGRESS: Final = 46
BPF_TCX_EGRESS: Final = 47
# enum bpf_tc_attach_point (libbpf.h): a hook of both points is the clsact qdisc itself.
BPF_TC_INGRESS: Final = 1 << 0
BPF_TC_EGRESS: Final = 1 << 1
# enum bpf_tc_flags (libbpf.h): attaching replaces a filter of the same handle/priority.
BPF_TC_F_REPLACE: Final = 1 << 0
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

log = logging.getLogger(__name__)
# libbpf warns about a failure Septum then raises itself, in one line: by default (no
# logging configured) its messages go nowhere instead of to stderr through logging's
# last-resort handler.  An application that configures logging receives them.
log.addHandler(logging.NullHandler())

# enum libbpf_print_level (libbpf.h).
LIBBPF_WARN: Final = 0
LIBBPF_INFO: Final = 1
LIBBPF_DEBUG: Final = 2
_LOG_LEVELS: Final = {LIBBPF_WARN: logging.WARNING, LIBBPF_INFO: logging.INFO}
# libbpf_print_fn_t: int (*)(enum libbpf_print_level, const char *format, va_list args).
# A va_list argument reaches the callee as a pointer on x86-64 (an array type).
_PrintFn = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)
# va_copy on x86-64 is a copy of the 24-byte __va_list_tag the argument points to: it lets
# vsnprintf measure a message before formatting it.  Elsewhere a message is formatted
# once, into a buffer of _FALLBACK_BYTES, and cut there.
_VA_LIST_BYTES: Final = 24 if platform.machine() == "x86_64" else 0
_FALLBACK_BYTES: Final = 1 << 20
# libbpf prints a rejected program's verifier log in one message, framed like this.
_VERIFIER_LOG: Final = re.compile(
    r"prog '(?P<program>[^']*)': -- BEGIN PROG LOAD LOG --\n(?P<log>.*?)-- END PROG LOAD LOG --",
    re.DOTALL,
)
# libbpf 1.x starts every message with it; the logger's name says as much
_PREFIX: Final = "libbpf: "


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


@dataclass(frozen=True)
class VerifierLog:
    """The verifier's log for a program the kernel refused to load."""

    program: str
    text: str

    @property
    def lines(self) -> int:
        return len(self.text.splitlines())


# Per thread: libbpf calls the print callback in the thread that called libbpf.
_verifier_logs = threading.local()


def last_verifier_log() -> VerifierLog | None:
    """The verifier log libbpf last reported in this thread (None: none since the reset)."""
    return getattr(_verifier_logs, "last", None)


def reset_verifier_log() -> None:
    _verifier_logs.last = None


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None)
    libc.vsnprintf.restype = ctypes.c_int
    libc.vsnprintf.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p]
    return libc


def _format(libc: ctypes.CDLL, fmt: bytes, args: int | None) -> str:
    if args is None:  # no va_list at all: nothing to substitute
        return fmt.decode(errors="replace")
    if _VA_LIST_BYTES:
        args_copy = ctypes.create_string_buffer(_VA_LIST_BYTES)
        ctypes.memmove(args_copy, args, _VA_LIST_BYTES)
        size = max(libc.vsnprintf(None, 0, fmt, ctypes.addressof(args_copy)), 0) + 1
    else:
        size = _FALLBACK_BYTES
    buffer = ctypes.create_string_buffer(size)
    libc.vsnprintf(buffer, size, fmt, args)
    return buffer.value.decode(errors="replace")


def _log_message(level: int, text: str) -> None:
    text = text.removeprefix(_PREFIX).rstrip("\n")
    found = _VERIFIER_LOG.search(text)
    if found:
        verifier_log = VerifierLog(found["program"], found["log"].rstrip("\n"))
        _verifier_logs.last = verifier_log
        # hundreds of lines: the error names the program and the line count instead
        log.debug("verifier log of program %s:\n%s", verifier_log.program, verifier_log.text)
        return
    log.log(_LOG_LEVELS.get(level, logging.DEBUG), "%s", text)


def _print_message(level: int, fmt: bytes | None, args: int | None) -> int:
    if fmt is None:
        return 0
    try:
        _log_message(level, _format(_LIBC, fmt, args))
    except Exception:  # an exception cannot cross back into C: keep libbpf going
        log.exception("formatting a libbpf message")
    return 0


_LIBC: Final = _libc()
# Module-level: libbpf keeps the pointer for the life of the process, so the ctypes thunk
# must never be garbage-collected.
_PRINT_CALLBACK: Final = _PrintFn(_print_message)


def _install_print(cdll: ctypes.CDLL) -> None:
    """Route libbpf's messages (process-wide) to `log` instead of stderr."""
    cdll.libbpf_set_print.restype = ctypes.c_void_p
    cdll.libbpf_set_print.argtypes = [_PrintFn]
    cdll.libbpf_set_print(_PRINT_CALLBACK)


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
        _install_print(self._cdll)

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
