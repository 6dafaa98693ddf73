"""Check every ctypes mirror in ``septum.dataplane.abi`` against the object's BTF.

Like Cilium's alignchecker: the C header is the truth, the compiled object's BTF says what
the compiler made of it, and a mirror whose size, field names or field offsets differ is a
load-time error instead of silently corrupt map entries.
"""

from __future__ import annotations

import ctypes
from collections.abc import Mapping

from septum.dataplane.errors import AbiMismatchError
from septum.dataplane.libbpf import BTF_KIND_STRUCT, BtfMember, lib


def struct_layout(btf: int, name: str) -> tuple[int, list[tuple[str, int]]]:
    """(size, [(member name, byte offset)]) of struct `name` in a libbpf ``struct btf *``."""
    binding = lib()
    type_id = int(binding.btf__find_by_name_kind(btf, name.encode(), BTF_KIND_STRUCT))
    if type_id < 0:
        raise AbiMismatchError(f"struct {name} is not in the BPF object's BTF")
    btf_type = binding.btf__type_by_id(btf, type_id).contents
    vlen = btf_type.info & 0xFFFF
    bitfield_offsets = bool(btf_type.info >> 31)
    members_address = ctypes.addressof(btf_type) + ctypes.sizeof(btf_type)
    members = (BtfMember * vlen).from_address(members_address)
    layout: list[tuple[str, int]] = []
    for member in members:
        bit_offset = member.offset & 0xFFFFFF if bitfield_offsets else member.offset
        member_name = binding.btf__name_by_offset(btf, member.name_off) or b""
        layout.append((member_name.decode(), bit_offset // 8))
    return int(btf_type.size), layout


def check_mirrors(btf: int, mirrors: Mapping[str, type[ctypes.Structure]]) -> None:
    """Raise AbiMismatchError naming the first struct and field that disagree."""
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
