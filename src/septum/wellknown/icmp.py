"""ICMP and ICMPv6 message type names, as Cilium's policy language and Hubble's metrics write them.

The one definition: policies name types with these (`icmps[].fields[].type: EchoRequest`), and
flow metrics label ICMP flows with them. Several names may map to one number (`Echo` and
`EchoRequest` are both 8); `ICMPV4_TYPE_NAMES` / `ICMPV6_TYPE_NAMES` give the one name shown
for a number.
"""

from __future__ import annotations

ICMPV4_TYPES: dict[str, int] = {
    "EchoReply": 0,
    "DestinationUnreachable": 3,
    "Redirect": 5,
    "Echo": 8,
    "EchoRequest": 8,
    "RouterAdvertisement": 9,
    "RouterSelection": 10,
    "TimeExceeded": 11,
    "ParameterProblem": 12,
    "Timestamp": 13,
    "TimestampReply": 14,
    "Photuris": 40,
    "ExtendedEchoRequest": 42,
    "ExtendedEchoReply": 43,
}
ICMPV6_TYPES: dict[str, int] = {
    "DestinationUnreachable": 1,
    "PacketTooBig": 2,
    "TimeExceeded": 3,
    "ParameterProblem": 4,
    "EchoRequest": 128,
    "EchoReply": 129,
    "MulticastListenerQuery": 130,
    "MulticastListenerReport": 131,
    "MulticastListenerDone": 132,
    "RouterSolicitation": 133,
    "RouterAdvertisement": 134,
    "NeighborSolicitation": 135,
    "NeighborAdvertisement": 136,
    "RedirectMessage": 137,
    "RouterRenumbering": 138,
    "ICMPNodeInformationQuery": 139,
    "ICMPNodeInformationResponse": 140,
    "InverseNeighborDiscoverySolicitation": 141,
    "InverseNeighborDiscoveryAdvertisement": 142,
    "HomeAgentAddressDiscoveryRequest": 144,
    "HomeAgentAddressDiscoveryReply": 145,
    "MobilePrefixSolicitation": 146,
    "MobilePrefixAdvertisement": 147,
    "DuplicateAddressRequestCodeSuffix": 157,
    "DuplicateAddressConfirmationCodeSuffix": 158,
    "ExtendedEchoRequest": 160,
    "ExtendedEchoReply": 161,
}

# Number -> the name shown for it in flows and metrics. Hubble names types as gopacket does,
# which differs from Cilium's policy names for 8 (`Echo`), 10 (`RouterSelection`) and 13
# (`Timestamp`): the shown names follow Hubble, the accepted names above follow Cilium.
_HUBBLE_ICMPV4_NAMES = {8: "EchoRequest", 10: "RouterSolicitation", 13: "TimestampRequest"}
ICMPV4_TYPE_NAMES: dict[int, str] = {}
for _name, _number in ICMPV4_TYPES.items():
    ICMPV4_TYPE_NAMES.setdefault(_number, _name)
ICMPV4_TYPE_NAMES.update(_HUBBLE_ICMPV4_NAMES)
ICMPV6_TYPE_NAMES: dict[int, str] = {number: name for name, number in ICMPV6_TYPES.items()}
del _name, _number
