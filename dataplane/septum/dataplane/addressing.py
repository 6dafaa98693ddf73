"""Pure conversions of caller-given addresses, prefixes and identities into map keys and
values, with errors that name the input at fault.  No I/O: the map modules use these."""

from __future__ import annotations

import ctypes
import ipaddress
from typing import Final

from septum.dataplane import abi
from septum.dataplane.errors import DatapathError, PrefixError

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
U32_MAX: Final = 0xFFFFFFFF


def parse_prefix(cidr: str) -> IPNetwork:
    """`cidr` as a network; host bits are dropped, as the LPM trie would ignore them."""
    try:
        return ipaddress.ip_network(cidr, strict=False)
    except ValueError as err:
        raise PrefixError(f"prefix {cidr!r}: {err}") from err


def is_host(network: IPNetwork) -> bool:
    """True for a /32 or /128: it goes to the exact-match host table, not the trie."""
    return network.prefixlen == network.max_prefixlen


def _family(network: IPNetwork) -> abi.IPVersion:
    return abi.IPVersion.V4 if network.version == 4 else abi.IPVersion.V6


def _address_field(network: IPNetwork) -> ctypes.Array[ctypes.c_uint8]:
    # IPv4 addresses sit in the first 4 of the key's 16 address bytes, the rest zero
    raw = network.network_address.packed.ljust(16, b"\0")
    return (ctypes.c_uint8 * 16)(*raw)


def host_key(network: IPNetwork) -> abi.HostKey:
    return abi.HostKey(family=_family(network), addr=_address_field(network))


def lpm_key(network: IPNetwork) -> abi.LpmAddrKey:
    return abi.LpmAddrKey(
        # the family is part of the matched prefix, so an IPv4 /8 never matches IPv6
        prefixlen=abi.LPM_ADDR_PREFIX_FIXED + network.prefixlen,
        family=_family(network),
        addr=_address_field(network),
    )


def check_identity(where: str, identity: object, error: type[DatapathError] = PrefixError) -> None:
    """Raise `error` naming `where` unless `identity` is a security identity.  0 is not
    one: the datapath reads it as "not looked up yet"."""
    if not isinstance(identity, int) or not 0 < identity <= U32_MAX:
        raise error(f"{where}: {identity!r} is not a security identity (1..{U32_MAX})")


def check_u32(where: str, value: object, error: type[DatapathError] = PrefixError) -> None:
    """Raise `error` naming `where` unless `value` is an integer that fits a __u32."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise error(f"{where}: {value!r} is not an integer")
    if not 0 <= value <= U32_MAX:
        raise error(f"{where}: {value} out of range 0..{U32_MAX}")


def address_bytes(address: str) -> bytes:
    """16-byte form of an address as it appears in events and conntrack keys."""
    try:
        packed = ipaddress.ip_address(address).packed
    except ValueError as err:
        raise PrefixError(f"address {address!r}: {err}") from err
    return packed.ljust(16, b"\0")
