"""Protocols and destination-port ranges.

ICMP and ICMPv6 have no ports; their message *type* takes the port's place in
entries (range type..type), as in Cilium's policy map.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from septum.operator.engine.errors import PolicyError

PROTO_ANY = 0
PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17
PROTO_ICMPV6 = 58
PROTO_SCTP = 132

PORT_MIN = 0
PORT_MAX = 65535

PROTOCOL_NUMBERS = {"TCP": PROTO_TCP, "UDP": PROTO_UDP, "SCTP": PROTO_SCTP}
PROTOCOL_NAMES = {
    PROTO_ANY: "ANY",
    PROTO_ICMP: "ICMP",
    PROTO_TCP: "TCP",
    PROTO_UDP: "UDP",
    PROTO_ICMPV6: "ICMPv6",
    PROTO_SCTP: "SCTP",
}
# The protocols a rule with ports but no protocol (Cilium `ANY`) expands to.
L4_PROTOCOLS = (PROTO_TCP, PROTO_UDP, PROTO_SCTP)


def protocol_name(number: int) -> str:
    return PROTOCOL_NAMES.get(number, str(number))


def parse_protocol_name(name: str) -> int:
    """'TCP', 'udp', 'ICMPv6', '6' -> protocol number (for the CLI and explain)."""
    upper = name.strip().upper()
    for number, known in PROTOCOL_NAMES.items():
        if known.upper() == upper:
            return number
    if upper.isdigit() and 0 <= int(upper) <= 255:
        return int(upper)
    raise ValueError(f"unknown protocol {name!r}")


class PortRange(NamedTuple):
    """Protocol plus an inclusive destination-port range; protocol 0 means any protocol.

    A NamedTuple rather than a dataclass: compile keys hash these by the million.
    """

    protocol: int
    lo: int = PORT_MIN
    hi: int = PORT_MAX

    def covers(self, protocol: int, port: int) -> bool:
        if self.protocol != PROTO_ANY and self.protocol != protocol:
            return False
        return self.lo <= port <= self.hi

    def __str__(self) -> str:
        proto = protocol_name(self.protocol)
        if self.lo == PORT_MIN and self.hi == PORT_MAX:
            return f"{proto}/*"
        if self.lo == self.hi:
            return f"{proto}/{self.lo}"
        return f"{proto}/{self.lo}-{self.hi}"


@dataclass(frozen=True, slots=True)
class NamedPort:
    """A container port name, resolved per endpoint (protocol None: any protocol)."""

    name: str
    protocol: int | None = None

    def __str__(self) -> str:
        return f"{protocol_name(self.protocol)}/{self.name}" if self.protocol else self.name


PortSpec = PortRange | NamedPort


def check_port(value: int, path: str, allow_zero: bool = False) -> int:
    low = 0 if allow_zero else 1
    if not low <= value <= PORT_MAX:
        raise PolicyError(path, f"{value} is out of range ({low}-{PORT_MAX})")
    return value


def check_port_name(name: str, path: str) -> str:
    # IANA_SVC_NAME: at most 15 lowercase alphanumerics or '-', at least one letter.
    ok = (
        0 < len(name) <= 15
        and all(c.islower() or c.isdigit() or c == "-" for c in name)
        and any(c.isalpha() for c in name)
        and not name.startswith("-")
        and not name.endswith("-")
        and "--" not in name
    )
    if not ok:
        raise PolicyError(path, f"{name!r} is neither a port number nor a valid port name")
    return name
