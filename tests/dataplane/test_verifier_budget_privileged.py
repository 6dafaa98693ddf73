"""The verifier's work for each program stays well inside the kernel's limit of 1,000,000
processed instructions: a program near the limit loads here and fails on a kernel whose
verifier prunes a little worse.  The object is loaded unpinned through libbpf with the
verifier's statistics log (BPF_LOG_STATS) for every program."""

from __future__ import annotations

import ctypes
import re

import pytest

from septum.dataplane.prereq import DEFAULT_OBJECT

pytestmark = pytest.mark.privileged

LIMIT = 1_000_000
BUDGET = 0.7  # of LIMIT, per program
BPF_LOG_STATS = 4
LOG_BYTES = 1 << 16


def _verifier_work() -> dict[str, int]:
    libbpf = ctypes.CDLL("libbpf.so.1", use_errno=True)
    libbpf.bpf_object__open_file.restype = ctypes.c_void_p
    libbpf.bpf_object__open_file.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
    libbpf.bpf_object__next_program.restype = ctypes.c_void_p
    libbpf.bpf_object__next_program.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    libbpf.bpf_program__name.restype = ctypes.c_char_p
    libbpf.bpf_program__name.argtypes = [ctypes.c_void_p]
    libbpf.bpf_program__set_log_level.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
    libbpf.bpf_program__set_log_buf.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
    libbpf.bpf_object__load.argtypes = [ctypes.c_void_p]
    libbpf.bpf_object__close.argtypes = [ctypes.c_void_p]

    obj = libbpf.bpf_object__open_file(str(DEFAULT_OBJECT).encode(), None)
    assert obj, f"cannot open {DEFAULT_OBJECT}"
    logs: dict[str, ctypes.Array[ctypes.c_char]] = {}
    try:
        prog = libbpf.bpf_object__next_program(obj, None)
        while prog:
            name = libbpf.bpf_program__name(prog).decode()
            logs[name] = ctypes.create_string_buffer(LOG_BYTES)
            assert libbpf.bpf_program__set_log_buf(prog, logs[name], LOG_BYTES) == 0
            assert libbpf.bpf_program__set_log_level(prog, BPF_LOG_STATS) == 0
            prog = libbpf.bpf_object__next_program(obj, prog)
        assert libbpf.bpf_object__load(obj) == 0, "the object failed to load"
    finally:
        libbpf.bpf_object__close(obj)
    work = {}
    for name, log in logs.items():
        found = re.search(r"processed (\d+) insns", log.value.decode(errors="replace"))
        assert found, f"{name}: no verifier statistics in {log.value[:500]!r}"
        work[name] = int(found.group(1))
    return work


def test_every_program_verifies_within_budget():
    work = _verifier_work()
    assert {"septum_from_pod", "septum_to_pod", "septum_xdp_prefilter"} <= set(work)
    over = {name: n for name, n in work.items() if n > BUDGET * LIMIT}
    assert not over, f"verifier work above {BUDGET:.0%} of the limit: {over} (all: {work})"
