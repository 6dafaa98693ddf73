"""Random bytes through the tc programs: every result is a documented verdict, counted
once, with a documented drop reason."""

from __future__ import annotations

import errno
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from septum.dataplane import abi
from septum.dataplane.abi import DropReason, Verdict
from septum.dataplane.errors import LibbpfError

pytestmark = pytest.mark.privileged

ETHERTYPES = st.sampled_from([0x0800, 0x86DD, 0x0806, 0x88CC, 0x8100])
IP_PROTOCOLS = st.sampled_from([0, 1, 6, 17, 43, 44, 47, 58, 60, 132, 255])


@st.composite
def frames(draw) -> bytes:
    kind = draw(st.integers(0, 2))
    if kind == 0:
        return draw(st.binary(min_size=0, max_size=300))
    ethertype = draw(ETHERTYPES)
    head = bytes(12) + struct.pack("!H", ethertype)
    if kind == 1:
        return head + draw(st.binary(min_size=0, max_size=300))
    # a plausible IP header with random fields, then random bytes
    if ethertype == 0x86DD:
        ip = struct.pack(
            "!IHBB", 6 << 28, draw(st.integers(0, 400)), draw(IP_PROTOCOLS), 64
        ) + draw(st.binary(min_size=32, max_size=32))
    else:
        ip = struct.pack(
            "!BBHHHBBH",
            draw(st.integers(0, 255)),
            0,
            draw(st.integers(0, 400)),
            draw(st.integers(0, 0xFFFF)),
            draw(st.integers(0, 0xFFFF)),
            64,
            draw(IP_PROTOCOLS),
            0,
        ) + draw(st.binary(min_size=8, max_size=8))
    return head + ip + draw(st.binary(min_size=0, max_size=200))


@settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(frame=frames(), program=st.sampled_from([abi.PROG_FROM_POD, abi.PROG_TO_POD]))
def test_random_bytes_get_a_documented_counted_verdict(runner, frame, program):
    before = runner.datapath.counters()
    try:
        retval = runner.retval(frame, program)
    except LibbpfError as err:
        # The kernel itself refuses test runs without a whole Ethernet + IP header.
        assert err.errno == errno.EINVAL and len(frame) < 14 + 40
        assert runner.datapath.counters() == before
        return
    after = runner.datapath.counters()
    moved = [k for k, v in after.items() if v.packets != (before[k].packets if k in before else 0)]
    assert len(moved) == 1, moved
    key = moved[0]
    assert after[key].packets - (before[key].packets if key in before else 0) == 1
    assert retval in (runner.FORWARD, runner.DROP)
    if retval == runner.FORWARD:
        assert (key.verdict, key.drop_reason) == (Verdict.FORWARDED, DropReason.NONE)
    else:
        assert key.verdict == Verdict.DROPPED
        assert DropReason(key.drop_reason) != DropReason.NONE
        assert key.drop_reason in abi.DROP_REASON_DESCRIPTION
