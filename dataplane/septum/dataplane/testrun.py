"""BPF_PROG_TEST_RUN: run a loaded program on a packet without attaching it."""

from __future__ import annotations

import ctypes
import struct
from dataclasses import dataclass
from typing import Final

from septum.dataplane.libbpf import BpfTestRunOpts, check, lib

# struct __sk_buff is 192 bytes; test runs may set only a few fields (mark, priority,
# ingress_ifindex, ifindex, cb, tstamp, wire_len, gso_*), the rest must be zero.
SKB_CTX_SIZE: Final = 192
_SKB_IFINDEX_OFFSET: Final = 40
_SKB_INGRESS_IFINDEX_OFFSET: Final = 36


@dataclass(frozen=True)
class TestRunResult:
    retval: int
    duration_ns: int  # kernel-measured average per repetition
    data_out: bytes


def test_run(
    prog_fd: int, packet: bytes, *, repeat: int = 1, ifindex: int = 0, skb_ctx: bool = True
) -> TestRunResult:
    """Run `prog_fd` on `packet` `repeat` times; tc programs see skb->ifindex = `ifindex`
    (an interface of the caller's netns, > 1 or the loopback)."""
    data_in = ctypes.create_string_buffer(packet, max(len(packet), 1))
    data_out = ctypes.create_string_buffer(len(packet) + 256)
    opts = BpfTestRunOpts(
        sz=ctypes.sizeof(BpfTestRunOpts),
        data_in=ctypes.cast(data_in, ctypes.c_void_p),
        data_size_in=len(packet),
        data_out=ctypes.cast(data_out, ctypes.c_void_p),
        data_size_out=len(data_out),
        repeat=repeat,
    )
    ctx = ctypes.create_string_buffer(SKB_CTX_SIZE)
    if skb_ctx and ifindex:
        struct.pack_into("<I", ctx, _SKB_IFINDEX_OFFSET, ifindex)
        opts.ctx_in = ctypes.cast(ctx, ctypes.c_void_p)
        opts.ctx_size_in = SKB_CTX_SIZE
    check(lib().bpf_prog_test_run_opts(prog_fd, ctypes.byref(opts)), "BPF_PROG_TEST_RUN")
    return TestRunResult(
        retval=ctypes.c_int32(opts.retval).value,
        duration_ns=int(opts.duration),
        data_out=data_out.raw[: opts.data_size_out],
    )
