"""CIDR parsing and containment helpers shared by every policy kind."""

from __future__ import annotations

import ipaddress

from septum.operator.engine.errors import PolicyError
from septum.operator.engine.rules import CidrPeer, IPNetwork


def parse_cidr(text: str, path: str) -> IPNetwork:
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError as err:
        raise PolicyError(path, f"malformed CIDR {text!r}: {err}") from err


def parse_cidr_peer(
    cidr_text: str, excepts_text: list[str], path: str, except_path: str
) -> CidrPeer:
    cidr = parse_cidr(cidr_text, path)
    excepts: list[IPNetwork] = []
    for i, text in enumerate(excepts_text):
        item_path = f"{except_path}[{i}]"
        exc = parse_cidr(text, item_path)
        if exc.version != cidr.version or not exc.subnet_of(cidr):  # type: ignore[arg-type]
            raise PolicyError(item_path, f"{exc} is not inside {cidr}")
        excepts.append(exc)
    return CidrPeer(cidr, tuple(excepts))


def contains(outer: IPNetwork, inner: IPNetwork) -> bool:
    return outer.version == inner.version and inner.subnet_of(outer)  # type: ignore[arg-type]
