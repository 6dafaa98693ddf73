"""Check every mirror in ``septum.dataplane.abi`` against the object's BTF.

Like Cilium's alignchecker: the C header is the truth, the compiled object's BTF says what
the compiler made of it, and a ctypes mirror whose size, field names or field offsets differ,
or a Python enum whose members differ from its C enum's, is a load-time error instead of
silently corrupt map entries.
"""

from __future__ import annotations

import ctypes
from collections.abc import Mapping

from septum.dataplane import abi
from septum.dataplane.errors import AbiMismatchError
from septum.dataplane.libbpf import BTF_KIND_STRUCT, BtfMember, BtfType, lib

BTF_KIND_ENUM = 6  # linux/btf.h; clang writes every enum of abi.h (all 32-bit) with this kind


class BtfEnum(ctypes.Structure):
    """``struct btf_enum`` (linux/btf.h): one member of a BTF_KIND_ENUM type."""

    _fields_ = [("name_off", ctypes.c_uint32), ("val", ctypes.c_int32)]


def _btf_type(btf: int, name: str, kind: int, kind_name: str) -> BtfType:
    type_id = int(lib().btf__find_by_name_kind(btf, name.encode(), kind))
    if type_id < 0:
        raise AbiMismatchError(f"{kind_name} {name} is not in the BPF object's BTF")
    btf_type: BtfType = lib().btf__type_by_id(btf, type_id).contents
    return btf_type


def _name(btf: int, name_off: int) -> str:
    return (lib().btf__name_by_offset(btf, name_off) or b"").decode()


def struct_layout(btf: int, name: str) -> tuple[int, list[tuple[str, int]]]:
    """(size, [(member name, byte offset)]) of struct `name` in a libbpf ``struct btf *``."""
    btf_type = _btf_type(btf, name, BTF_KIND_STRUCT, "struct")
    vlen = btf_type.info & 0xFFFF
    bitfield_offsets = bool(btf_type.info >> 31)
    members_address = ctypes.addressof(btf_type) + ctypes.sizeof(btf_type)
    members = (BtfMember * vlen).from_address(members_address)
    layout: list[tuple[str, int]] = []
    for member in members:
        bit_offset = member.offset & 0xFFFFFF if bitfield_offsets else member.offset
        layout.append((_name(btf, member.name_off), bit_offset // 8))
    return int(btf_type.size), layout


def enum_members(btf: int, name: str) -> dict[str, int]:
    """{member name: value} of enum `name` in a libbpf ``struct btf *``."""
    btf_type = _btf_type(btf, name, BTF_KIND_ENUM, "enum")
    vlen = btf_type.info & 0xFFFF
    signed = bool(btf_type.info >> 31)  # kind_flag (clang 14 leaves it 0: all ours are >= 0)
    members_address = ctypes.addressof(btf_type) + ctypes.sizeof(btf_type)
    members = (BtfEnum * vlen).from_address(members_address)
    return {
        _name(btf, member.name_off): member.val if signed else member.val & 0xFFFFFFFF
        for member in members
    }


def check_enums(btf: int, enums: Mapping[str, abi.EnumMirror]) -> None:
    """Raise AbiMismatchError naming the first enum and member that disagree: a C member the
    Python enum lacks or numbers differently, or (for a complete mirror) a Python member the
    C enum lacks."""
    for c_name, mirror in enums.items():
        c_members = enum_members(btf, c_name)
        python = mirror.python.__name__
        python_members = {
            mirror.c_prefix + name: int(member)
            for name, member in mirror.python.__members__.items()
        }
        for member, value in c_members.items():
            python_name = f"{python}.{member.removeprefix(mirror.c_prefix)}"
            if member not in python_members:
                raise AbiMismatchError(
                    f"enum {c_name}: {member} = {value} has no mirror {python_name} "
                    "(septum.dataplane.abi is out of date)"
                )
            if python_members[member] != value:
                raise AbiMismatchError(
                    f"enum {c_name}: {member} = {value} in BTF != {python_name} = "
                    f"{python_members[member]} (septum.dataplane.abi is out of date)"
                )
        missing = [member for member in python_members if member not in c_members]
        if mirror.complete and missing:
            raise AbiMismatchError(
                f"enum {c_name}: no {missing[0]} in BTF for "
                f"{python}.{missing[0].removeprefix(mirror.c_prefix)} "
                "(septum.dataplane.abi is out of date)"
            )


def check_mirrors(
    btf: int,
    mirrors: Mapping[str, type[ctypes.Structure]],
    enums: Mapping[str, abi.EnumMirror] = abi.ENUM_MIRRORS,
) -> None:
    """Raise AbiMismatchError naming the first struct and field, or enum and member, that
    disagree.  The loader calls this with every struct mirror; the enum mirrors are
    ``abi.ENUM_MIRRORS`` unless given."""
    for c_name, mirror in mirrors.items():
        size, layout = struct_layout(btf, c_name)
        if size != ctypes.sizeof(mirror):
            raise AbiMismatchError(
                f"struct {c_name}: BTF size {size} != {mirror.__name__} size "
                f"{ctypes.sizeof(mirror)} (septum.dataplane.abi is out of date)"
            )
        python_fields = [(field[0], getattr(mirror, field[0]).offset) for field in mirror._fields_]
        if layout != python_fields:
            raise AbiMismatchError(
                f"struct {c_name}: BTF fields {layout} != {mirror.__name__} fields "
                f"{python_fields} (septum.dataplane.abi is out of date)"
            )
    check_enums(btf, enums)
