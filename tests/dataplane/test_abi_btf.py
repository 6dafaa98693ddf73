"""The ctypes mirrors in septum.dataplane.abi match the compiled object's BTF, and the
enums match abi.h."""

from __future__ import annotations

import ctypes
import re
import struct
from pathlib import Path

import pytest
from septum.dataplane import abi
from septum.dataplane.btfcheck import check_mirrors, struct_layout
from septum.dataplane.errors import AbiMismatchError
from septum.dataplane.libbpf import lib
from septum.dataplane.prereq import DEFAULT_OBJECT

HEADER = Path(__file__).resolve().parents[2] / "bpf" / "include" / "septum" / "abi.h"


@pytest.fixture(scope="module")
def btf():
    handle = lib().bpf_object__open_file(str(DEFAULT_OBJECT).encode(), None)
    assert handle, f"cannot open {DEFAULT_OBJECT}: run `make bpf`"
    try:
        yield lib().bpf_object__btf(handle)
    finally:
        lib().bpf_object__close(handle)


def test_every_mirror_matches_btf_sizes_and_offsets(btf):
    check_mirrors(btf, abi.MIRRORS)
    for c_name, mirror in abi.MIRRORS.items():
        size, layout = struct_layout(btf, c_name)
        assert size == ctypes.sizeof(mirror)
        assert layout == [(f[0], getattr(mirror, f[0]).offset) for f in mirror._fields_]


def test_a_wrong_mirror_is_refused(btf):
    class Shifted(ctypes.Structure):
        _fields_ = [("identity", ctypes.c_uint64)]

    with pytest.raises(AbiMismatchError, match="septum_ipcache_value"):
        check_mirrors(btf, {"septum_ipcache_value": Shifted})


def test_flow_event_format_decodes_the_struct():
    event = abi.FlowEvent(time_ns=5, bytes=7, drop_reason=181, trace_point=101, src_port=80)
    decoded = next(struct.iter_unpack(abi.FLOW_EVENT_FORMAT, bytes(event)))
    fields = dict(zip(abi.FLOW_EVENT_FIELDS, decoded, strict=True))
    assert (fields["time_ns"], fields["bytes"], fields["drop_reason"]) == (5, 7, 181)
    assert (fields["trace_point"], fields["src_port"]) == (101, 80)


def _header_enum(prefix: str) -> dict[str, int]:
    text = HEADER.read_text()
    return {
        name: int(value)
        for name, value in re.findall(rf"\b{prefix}([A-Z0-9_]+)\s*=\s*(\d+)", text)
        if name != "MAX" and not name.startswith("REASON_MAX")
    }


@pytest.mark.parametrize(
    ("prefix", "enum"),
    [
        ("SEPTUM_DROP_", abi.DropReason),
        ("SEPTUM_VERDICT_", abi.Verdict),
        ("SEPTUM_EVENT_", abi.EventType),
        ("SEPTUM_MATCH_", abi.MatchType),
        ("SEPTUM_ACTION_", abi.PolicyAction),
        ("SEPTUM_CT_", abi.CtState),
    ],
)
def test_enums_match_the_header(prefix, enum):
    assert _header_enum(prefix) == {m.name: int(m) for m in enum}


def test_trace_points_and_directions_match_the_header():
    traces = _header_enum("SEPTUM_TRACE_")
    assert traces == {
        "UNKNOWN": 0,
        "FROM_ENDPOINT": abi.TraceObservationPoint.FROM_ENDPOINT,
        "FROM_NETWORK": abi.TraceObservationPoint.FROM_NETWORK,
        "TO_ENDPOINT": abi.TraceObservationPoint.TO_ENDPOINT,
    }
    assert _header_enum("SEPTUM_DIR_") == {"UNKNOWN": 0, "INGRESS": 1, "EGRESS": 2}


def test_every_drop_reason_is_described_and_maps_to_hubble():
    for reason in abi.DropReason:
        assert abi.DROP_REASON_DESCRIPTION[reason]
        assert abi.hubble_drop_reason(reason) in (set(range(130, 205)) | {0}), reason
    for reason, name in abi.HUBBLE_DROP_REASON_NAME.items():
        assert abi.hubble_drop_reason(reason) == reason, name
