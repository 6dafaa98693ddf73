"""What a DNS message says, in the terms the proxy, the FQDN cache and Hubble need.

The addresses of an answer are those of the query name and of every name its CNAME
chain leads to; the TTL an address is kept for is the lowest along its chain, since
the mapping is only valid while every link is.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import dns.message
import dns.rdataclass
import dns.rdatatype

from septum.agent.l7.fqdncache import IPAddress
from septum.operator.engine.fqdn import canonical_name


@dataclass(frozen=True, slots=True)
class QueryFacts:
    name: str  # canonical: lower case, final dot
    qtypes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AnswerFacts:
    rcode: int
    addresses: tuple[tuple[IPAddress, int], ...]  # with the TTL the chain allows
    cnames: tuple[str, ...]
    rrtypes: tuple[str, ...]
    names: tuple[str, ...]  # the query name, then each CNAME target

    @property
    def lowest_ttl(self) -> int:
        return min((ttl for _, ttl in self.addresses), default=0)


def query_facts(message: dns.message.Message) -> QueryFacts:
    if not message.question:
        return QueryFacts("", ())
    name = canonical_name(message.question[0].name.to_text())
    qtypes = tuple(dns.rdatatype.to_text(q.rdtype) for q in message.question)
    return QueryFacts(name, qtypes)


def answer_facts(message: dns.message.Message) -> AnswerFacts:
    query = query_facts(message)
    by_name: dict[str, list[dns.rrset.RRset]] = {}
    rrtypes: list[str] = []
    for rrset in message.answer:
        by_name.setdefault(canonical_name(rrset.name.to_text()), []).append(rrset)
        rrtype = dns.rdatatype.to_text(rrset.rdtype)
        if rrtype not in rrtypes:
            rrtypes.append(rrtype)
    chain: list[str] = []
    chain_ttl: dict[str, int] = {}
    cnames: list[str] = []
    name, ttl_so_far = query.name, 2**31
    while name and name not in chain_ttl:
        chain.append(name)
        chain_ttl[name] = ttl_so_far
        target = ""
        for rrset in by_name.get(name, []):
            if rrset.rdtype == dns.rdatatype.CNAME and rrset.rdclass == dns.rdataclass.IN:
                target = canonical_name(rrset[0].target.to_text())
                ttl_so_far = min(ttl_so_far, rrset.ttl)
                cnames.append(target)
        name = target
    addresses: dict[IPAddress, int] = {}
    for link in chain:
        for rrset in by_name.get(link, []):
            if rrset.rdtype not in (dns.rdatatype.A, dns.rdatatype.AAAA):
                continue
            ttl = min(chain_ttl[link], rrset.ttl)
            for rdata in rrset:
                address = ipaddress.ip_address(rdata.address)
                addresses[address] = min(ttl, addresses.get(address, ttl))
    return AnswerFacts(
        rcode=message.rcode(),
        addresses=tuple(addresses.items()),
        cnames=tuple(cnames),
        rrtypes=tuple(rrtypes),
        names=tuple(chain),
    )


__all__ = ["AnswerFacts", "QueryFacts", "answer_facts", "query_facts"]
