"""The ctypes mirrors and the Python enums in septum.dataplane.abi match the compiled object's
BTF, and abi.h keeps every shared constant in an enum."""

from __future__ import annotations

import ctypes
import enum
import re
import struct
from pathlib import Path

import pytest

from septum.dataplane import abi
from septum.dataplane.btfcheck import (
    BTF_KIND_ENUM,
    check_enums,
    check_mirrors,
    enum_members,
    struct_layout,
)
from septum.dataplane.errors import AbiMismatchError
from septum.dataplane.libbpf import lib
from septum.dataplane.prereq import DEFAULT_OBJECT
from septum.wellknown.reserved import ReservedIdentity

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


def test_every_enum_mirror_matches_btf_members_and_values(btf):
    check_enums(btf, abi.ENUM_MIRRORS)
    for c_name, mirror in abi.ENUM_MIRRORS.items():
        python = {mirror.c_prefix + name: int(m) for name, m in mirror.python.__members__.items()}
        c_members = enum_members(btf, c_name)
        assert c_members.items() <= python.items(), c_name
        if mirror.complete:
            assert c_members == python, c_name


def _btf_enum_names(btf) -> set[str]:
    names = set()
    type_id = 1
    while btf_type := lib().btf__type_by_id(btf, type_id):
        if (btf_type.contents.info >> 24) & 0x1F == BTF_KIND_ENUM:
            names.add(lib().btf__name_by_offset(btf, btf_type.contents.name_off).decode())
        type_id += 1
    return names


def test_every_enum_of_the_header_reaches_btf_and_is_mirrored(btf):
    header_enums = set(re.findall(r"^enum (septum_\w+) \{", HEADER.read_text(), re.MULTILINE))
    septum_enums = {name for name in _btf_enum_names(btf) if name.startswith("septum_")}
    assert header_enums == septum_enums == set(abi.ENUM_MIRRORS)
    # one member of struct septum_abi_enums per enum: that is how they reach the BTF
    assert len(struct_layout(btf, "septum_abi_enums")[1]) == len(abi.ENUM_MIRRORS)


class _WrongVerdict(enum.IntEnum):
    UNKNOWN = 0
    FORWARDED = 1
    DROPPED = 3  # 2 in abi.h
    AUDIT = 4


class _ShortVerdict(enum.IntEnum):
    UNKNOWN = 0
    FORWARDED = 1
    DROPPED = 2  # no AUDIT


class _LongVerdict(enum.IntEnum):
    UNKNOWN = 0
    FORWARDED = 1
    DROPPED = 2
    AUDIT = 4
    ERROR = 3  # not in abi.h


@pytest.mark.parametrize(
    ("mirror", "message"),
    [
        (
            _WrongVerdict,
            r"enum septum_verdict: SEPTUM_VERDICT_DROPPED = 2 .*_WrongVerdict.DROPPED = 3",
        ),
        (
            _ShortVerdict,
            r"enum septum_verdict: SEPTUM_VERDICT_AUDIT = 4 has no mirror _ShortVerdict.AUDIT",
        ),
        (
            _LongVerdict,
            r"enum septum_verdict: no SEPTUM_VERDICT_ERROR in BTF for _LongVerdict.ERROR",
        ),
    ],
)
def test_a_wrong_enum_mirror_is_refused_naming_enum_and_member(btf, mirror, message):
    wrong = {"septum_verdict": abi.EnumMirror(mirror, "SEPTUM_VERDICT_")}
    with pytest.raises(AbiMismatchError, match=message):
        check_enums(btf, wrong)
    with pytest.raises(AbiMismatchError, match=message):
        check_mirrors(btf, abi.MIRRORS, wrong)


def test_an_enum_missing_from_btf_is_refused(btf):
    with pytest.raises(AbiMismatchError, match="enum septum_no_such_enum is not in"):
        check_enums(btf, {"septum_no_such_enum": abi.EnumMirror(abi.Verdict, "SEPTUM_VERDICT_")})


def test_reserved_identities_are_the_wellknown_ones(btf):
    c_members = enum_members(btf, "septum_reserved_identity")
    assert c_members == {
        "SEPTUM_IDENTITY_UNKNOWN": ReservedIdentity.UNKNOWN,
        "SEPTUM_IDENTITY_HOST": ReservedIdentity.HOST,
        "SEPTUM_IDENTITY_WORLD": ReservedIdentity.WORLD,
    }
    assert abi.IDENTITY_ANY is ReservedIdentity.UNKNOWN
    assert abi.IDENTITY_HOST is ReservedIdentity.HOST
    assert abi.IDENTITY_WORLD is ReservedIdentity.WORLD


def test_module_level_constants_are_enum_members():
    assert abi.EP_F_AUDIT is abi.EndpointFlag.AUDIT
    assert abi.EVENT_F_RELATED is abi.EventFlag.RELATED
    assert abi.POLICY_F_HAS_RANGE is abi.PolicyFlag.HAS_RANGE
    assert abi.EP_POLICY_F_EXACT_FIRST_EGRESS is abi.EndpointPolicyFlag.EXACT_FIRST_EGRESS
    assert abi.CFG_F_BENCH_FORCE_NEW is abi.ConfigFlag.BENCH_FORCE_NEW
    assert abi.POLICY_ICMP_TYPE == 0x100
    assert (abi.DIRECTION_SLOTS, abi.VERDICT_SLOTS, abi.DROP_REASON_SLOTS) == (3, 8, 256)
    assert abi.CT4_IFINDEX_MASK == (1 << 24) - 1
    assert abi.counter_index(2, 4, 233) == ((2 * 8) + 4) * 256 + 233


def test_abi_h_defines_no_shared_constant():
    """Shared numbers are enum members (BTF records them); a macro may only derive from them."""
    defines = set(re.findall(r"^#define (\w+)", HEADER.read_text(), re.MULTILINE))
    assert defines == {
        "SEPTUM_ABI_H",
        "SEPTUM_CT4_IFINDEX_MASK",
        "SEPTUM_COUNTER_INDEX",
        "SEPTUM_COUNTER_ENTRIES",
        "SEPTUM_ASSERT_SIZE",
    }


def test_flow_event_format_is_derived_from_the_struct():
    # the format the event decoders have always used, now computed from FlowEvent's fields
    assert abi.FLOW_EVENT_FORMAT == "<QQ16s16sIIIIIIBBHHHHHHBBBBBBBBBB6s6s4s"
    assert abi.struct_format(abi.FlowEvent) == abi.FLOW_EVENT_FORMAT
    for mirror in abi.MIRRORS.values():
        assert struct.calcsize(abi.struct_format(mirror)) == ctypes.sizeof(mirror), mirror


def test_struct_format_pads_what_the_compiler_pads():
    class Padded(ctypes.Structure):
        _fields_ = [("a", ctypes.c_uint8), ("b", ctypes.c_uint32), ("c", ctypes.c_uint16)]

    assert abi.struct_format(Padded) == "<BxxxIHxx"
    assert struct.calcsize("<BxxxIHxx") == ctypes.sizeof(Padded)


def test_flow_event_format_decodes_the_struct():
    event = abi.FlowEvent(time_ns=5, bytes=7, drop_reason=181, trace_point=101, src_port=80)
    decoded = next(struct.iter_unpack(abi.FLOW_EVENT_FORMAT, bytes(event)))
    fields = dict(zip(abi.FLOW_EVENT_FIELDS, decoded, strict=True))
    assert (fields["time_ns"], fields["bytes"], fields["drop_reason"]) == (5, 7, 181)
    assert (fields["trace_point"], fields["src_port"]) == (101, 80)


def test_every_drop_reason_is_described_and_maps_to_hubble():
    for reason in abi.DropReason:
        assert abi.DROP_REASON_DESCRIPTION[reason]
        assert abi.hubble_drop_reason(reason) in (set(range(130, 205)) | {0}), reason
    for reason, name in abi.HUBBLE_DROP_REASON_NAME.items():
        assert abi.hubble_drop_reason(reason) == reason, name
