/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Packet parsing: Ethernet, IPv4 (options), IPv6 (extension headers), TCP,
 * UDP, SCTP, ICMP, ICMPv6.  Every header is bounds-checked against the linear
 * data before it is read, and against the lengths the packet claims; each way
 * a header can be short or inconsistent has its own drop reason, checked in
 * the order the headers appear (so a packet cut inside the TCP header whose
 * IPv4 total length still claims the full size is INVALID_IPV4_LENGTH: the
 * first header that lies wins).
 *
 * Fragments: the first fragment is parsed like any packet (its L4 header must
 * be complete, so tiny-fragment overlap tricks are TRUNCATED_*); later
 * fragments carry no L4 header and get the protocol and ports their first
 * fragment recorded (see fragments.h).
 */
#ifndef SEPTUM_LIB_PARSE_H
#define SEPTUM_LIB_PARSE_H

#include "common.h"

/* Extension headers walked before giving up (Cilium uses the same bound). */
#define SEPTUM_IPV6_MAX_EXT_HEADERS 8
/* Largest offset of an L4 header we read; keeps pointer arithmetic bounded
 * for the verifier.  Headers beyond it are reported as invalid ext headers. */
#define SEPTUM_MAX_L4_OFFSET 512

#define SEPTUM_FRAG_NONE 0
#define SEPTUM_FRAG_FIRST 1 /* offset 0, more fragments follow */
#define SEPTUM_FRAG_LATER 2 /* offset > 0: no L4 header */

#define SEPTUM_NEXTHDR_HOP 0
#define SEPTUM_NEXTHDR_ROUTING 43
#define SEPTUM_NEXTHDR_FRAGMENT 44
#define SEPTUM_NEXTHDR_AUTH 51
#define SEPTUM_NEXTHDR_DEST 60

/* IPv4 frag_off (host order once loaded): the offset in 8-byte units, the
 * More Fragments flag above it (net/ip.h's IP_OFFSET and IP_MF, which UAPI
 * headers lack). */
#define SEPTUM_IPV4_FRAG_OFFSET 0x1fff
#define SEPTUM_IPV4_FRAG_MORE 0x2000
#define SEPTUM_IPV4_FRAG_BITS (SEPTUM_IPV4_FRAG_MORE | SEPTUM_IPV4_FRAG_OFFSET) /* a fragment */
/* The IPv6 Fragment header's offset field: the offset above 3 bits, the More
 * Fragments flag in bit 0 (net/ipv6.h's IP6_OFFSET and IP6_MF). */
#define SEPTUM_IPV6_FRAG_OFFSET 0xfff8
#define SEPTUM_IPV6_FRAG_MORE 0x0001

/* Header lengths in 32-bit words, the smallest the headers allow: IPv4 IHL
 * and TCP data offset. */
#define SEPTUM_IPV4_MIN_IHL 5
/* The first byte of an IPv4 header without options: version 4, IHL 5. */
#define SEPTUM_IPV4_NO_OPTIONS 0x45
#define SEPTUM_TCP_MIN_DOFF 5
/* The TCP flags byte (enum septum_tcp_flag bits) sits at byte 13; struct
 * tcphdr spreads it over bitfields. */
#define SEPTUM_TCP_FLAGS_OFFSET 13

/* The parsed packet: user of parse results only, never crosses the boundary. */
struct septum_pkt {
	__u8 src[16];
	__u8 dst[16];
	__u32 len;            /* bytes on the wire */
	__u32 frag_id;
	__u16 sport_be;       /* conntrack ports (ICMP echo: the identifier, twice) */
	__u16 dport_be;
	__u16 policy_port_be; /* destination port, or SEPTUM_POLICY_ICMP_TYPE | ICMP type */
	__u8 ip_version;      /* enum septum_ip_version */
	__u8 protocol;
	__u8 tcp_flags;
	__u8 icmp_type;
	__u8 icmp_code;
	__u8 frag;            /* SEPTUM_FRAG_* */
	__u8 src_mac[6];      /* Ethernet addresses, reported in flow events */
	__u8 dst_mac[6];
} SEPTUM_ALIGNED;

/* The first 8 bytes shared by ICMP and ICMPv6 messages (echo id/sequence). */
struct septum_icmphdr {
	__u8 type;
	__u8 code;
	__be16 checksum;
	__be16 echo_id;
	__be16 echo_sequence;
};

/* SCTP common header (no Linux UAPI struct for it on every distro). */
struct septum_sctphdr {
	__be16 source;
	__be16 dest;
	__be32 vtag;
	__be32 checksum;
};

/* Neighbour discovery (133-137) and MLD (130-132, 143) keep IPv6 itself
 * working, so they bypass policy and anti-spoofing (counted forwarded, no
 * event) -- but only in the form RFC 4861 and RFC 3810 let a receiver accept:
 * ND with hop limit 255 (it was not routed), MLD with hop limit 1 from a
 * link-local source (fe80::/10) or from :: (the reports a node sends while its
 * link-local address is still tentative, RFC 3590).  Anything else with these
 * types is an ordinary ICMPv6 packet for policy to decide: a blanket bypass
 * would let a locked-down pod send anything anywhere, spoofed, as "neighbour
 * discovery". */
static __always_inline int septum_icmpv6_link_control(__u8 type, const struct septum_pkt *pkt,
						      __u8 hop_limit)
{
	const __u64 *src = (const __u64 *)pkt->src;

	if (type >= SEPTUM_ICMPV6_ND_ROUTER_SOLICIT && type <= SEPTUM_ICMPV6_ND_REDIRECT)
		return hop_limit == 255;
	if ((type >= SEPTUM_ICMPV6_MLD_QUERY && type <= SEPTUM_ICMPV6_MLD_DONE) ||
	    type == SEPTUM_ICMPV6_MLD2_REPORT)
		return hop_limit == 1 &&
		       (septum_ipv6_is_link_local(pkt->src) || (src[0] == 0 && src[1] == 0));
	return 0;
}

/* The TCP header's flags byte. */
static __always_inline __u8 septum_tcp_flags(const struct tcphdr *tcp)
{
	return ((const __u8 *)tcp)[SEPTUM_TCP_FLAGS_OFFSET];
}

static __always_inline int septum_icmp_echo(struct septum_pkt *pkt, __be16 id)
{
	pkt->sport_be = id;
	pkt->dport_be = id;
	return SEPTUM_PARSE_OK;
}

/* hop_limit: the IPv6 hop limit (0 for IPv4). */
static __always_inline int septum_parse_l4(void *l4, void *data_end, __u32 l4_len,
					   __u8 hop_limit, struct septum_pkt *pkt)
{
	switch (pkt->protocol) {
	case IPPROTO_TCP: {
		struct tcphdr *tcp = l4;

		if ((void *)(tcp + 1) > data_end || l4_len < sizeof(*tcp))
			return SEPTUM_DROP_TRUNCATED_TCP;
		if (tcp->doff < SEPTUM_TCP_MIN_DOFF || (__u32)tcp->doff * 4 > l4_len)
			return SEPTUM_DROP_INVALID_TCP_DATA_OFFSET;
		pkt->sport_be = tcp->source;
		pkt->dport_be = tcp->dest;
		pkt->policy_port_be = tcp->dest;
		pkt->tcp_flags = septum_tcp_flags(tcp);
		return SEPTUM_PARSE_OK;
	}
	case IPPROTO_UDP: {
		struct udphdr *udp = l4;

		if ((void *)(udp + 1) > data_end || l4_len < sizeof(*udp))
			return SEPTUM_DROP_TRUNCATED_UDP;
		pkt->sport_be = udp->source;
		pkt->dport_be = udp->dest;
		pkt->policy_port_be = udp->dest;
		return SEPTUM_PARSE_OK;
	}
	case IPPROTO_SCTP: {
		struct septum_sctphdr *sctp = l4;

		if ((void *)(sctp + 1) > data_end || l4_len < sizeof(*sctp))
			return SEPTUM_DROP_TRUNCATED_SCTP;
		pkt->sport_be = sctp->source;
		pkt->dport_be = sctp->dest;
		pkt->policy_port_be = sctp->dest;
		return SEPTUM_PARSE_OK;
	}
	case IPPROTO_ICMP: {
		struct septum_icmphdr *icmp = l4;

		if ((void *)(icmp + 1) > data_end || l4_len < sizeof(*icmp))
			return SEPTUM_DROP_TRUNCATED_ICMP;
		pkt->icmp_type = icmp->type;
		pkt->icmp_code = icmp->code;
		pkt->policy_port_be = bpf_htons(SEPTUM_POLICY_ICMP_TYPE | icmp->type);
		if (icmp->type == SEPTUM_ICMP_ECHO || icmp->type == SEPTUM_ICMP_ECHOREPLY)
			return septum_icmp_echo(pkt, icmp->echo_id);
		return SEPTUM_PARSE_OK;
	}
	case IPPROTO_ICMPV6: {
		struct septum_icmphdr *icmp6 = l4;
		__u8 type;

		if ((void *)(icmp6 + 1) > data_end || l4_len < sizeof(*icmp6))
			return SEPTUM_DROP_TRUNCATED_ICMPV6;
		type = icmp6->type;
		pkt->icmp_type = type;
		pkt->icmp_code = icmp6->code;
		pkt->policy_port_be = bpf_htons(SEPTUM_POLICY_ICMP_TYPE | type);
		if (septum_icmpv6_link_control(type, pkt, hop_limit))
			return SEPTUM_PARSE_BYPASS;
		if (type == SEPTUM_ICMPV6_ECHO_REQUEST || type == SEPTUM_ICMPV6_ECHO_REPLY)
			return septum_icmp_echo(pkt, icmp6->echo_id);
		return SEPTUM_PARSE_OK;
	}
	default:
		/* Other protocols (GRE, ESP, no-next-header, ...) carry no ports:
		 * L3-only policy entries still decide them. */
		return SEPTUM_PARSE_OK;
	}
}

static __always_inline int septum_parse_ipv4(void *data, void *data_end, __u32 wire_len,
					     struct septum_pkt *pkt)
{
	struct iphdr *ip = data + ETH_HLEN;
	__u32 hdr_len, total_len;
	__u16 frag_off;

	if ((void *)(ip + 1) > data_end)
		return SEPTUM_DROP_TRUNCATED_IPV4;
	if (ip->version != 4)
		return SEPTUM_DROP_INVALID_IP_VERSION;
	/* Addresses first: drop reports and the XDP prefilter need them even
	 * when a later check fails. */
	pkt->ip_version = SEPTUM_IP_V4;
	pkt->protocol = ip->protocol;
	__builtin_memcpy(pkt->src, &ip->saddr, 4);
	__builtin_memcpy(pkt->dst, &ip->daddr, 4);
	if (ip->ihl < SEPTUM_IPV4_MIN_IHL)
		return SEPTUM_DROP_INVALID_IPV4_IHL;
	hdr_len = (__u32)ip->ihl * 4;
	if ((void *)ip + hdr_len > data_end)
		return SEPTUM_DROP_INVALID_IPV4_IHL;
	total_len = bpf_ntohs(ip->tot_len);
	if (total_len < hdr_len || total_len > wire_len - ETH_HLEN)
		return SEPTUM_DROP_INVALID_IPV4_LENGTH;

	frag_off = bpf_ntohs(ip->frag_off);
	if (frag_off & SEPTUM_IPV4_FRAG_OFFSET) {
		pkt->frag = SEPTUM_FRAG_LATER;
		pkt->frag_id = ip->id;
		return SEPTUM_PARSE_OK;
	}
	if (frag_off & SEPTUM_IPV4_FRAG_MORE) {
		pkt->frag = SEPTUM_FRAG_FIRST;
		pkt->frag_id = ip->id;
	}
	return septum_parse_l4((void *)ip + hdr_len, data_end, total_len - hdr_len, 0, pkt);
}

static __always_inline int septum_parse_ipv6(void *data, void *data_end, __u32 wire_len,
					     struct septum_pkt *pkt)
{
	struct ipv6hdr *ip6 = data + ETH_HLEN;
	__u32 off = ETH_HLEN + sizeof(*ip6);
	__u32 remaining, ext_len;
	__u8 nexthdr;
	__u8 *ext;
	int i;

	if ((void *)(ip6 + 1) > data_end)
		return SEPTUM_DROP_TRUNCATED_IPV6;
	if (ip6->version != 6)
		return SEPTUM_DROP_INVALID_IP_VERSION;
	pkt->ip_version = SEPTUM_IP_V6;
	septum_copy16_unaligned(pkt->src, (__u8 *)&ip6->saddr);
	septum_copy16_unaligned(pkt->dst, (__u8 *)&ip6->daddr);
	nexthdr = ip6->nexthdr;
	pkt->protocol = nexthdr;
	remaining = bpf_ntohs(ip6->payload_len);
	if (remaining + sizeof(*ip6) > wire_len - ETH_HLEN)
		return SEPTUM_DROP_INVALID_IPV6_LENGTH;

#pragma unroll
	for (i = 0; i < SEPTUM_IPV6_MAX_EXT_HEADERS; i++) {
		if (nexthdr != SEPTUM_NEXTHDR_HOP && nexthdr != SEPTUM_NEXTHDR_ROUTING &&
		    nexthdr != SEPTUM_NEXTHDR_FRAGMENT && nexthdr != SEPTUM_NEXTHDR_AUTH &&
		    nexthdr != SEPTUM_NEXTHDR_DEST)
			goto l4;
		if (off > SEPTUM_MAX_L4_OFFSET)
			return SEPTUM_DROP_INVALID_IPV6_EXTENSION_HEADER;
		ext = data + off;
		if (nexthdr == SEPTUM_NEXTHDR_FRAGMENT) {
			__u16 frag_field;

			if ((void *)(ext + 8) > data_end || remaining < 8)
				return SEPTUM_DROP_INVALID_IPV6_EXTENSION_HEADER;
			nexthdr = ext[0];
			frag_field = bpf_ntohs(*(__be16 *)(ext + 2));
			pkt->frag_id = *(__u32 *)(ext + 4);
			off += 8;
			remaining -= 8;
			if (frag_field & SEPTUM_IPV6_FRAG_OFFSET) {
				pkt->frag = SEPTUM_FRAG_LATER;
				pkt->protocol = nexthdr;
				return SEPTUM_PARSE_OK;
			}
			if (frag_field & SEPTUM_IPV6_FRAG_MORE)
				pkt->frag = SEPTUM_FRAG_FIRST;
			continue;
		}
		if ((void *)(ext + 2) > data_end)
			return SEPTUM_DROP_INVALID_IPV6_EXTENSION_HEADER;
		if (nexthdr == SEPTUM_NEXTHDR_AUTH)
			ext_len = ((__u32)ext[1] + 2) * 4;
		else
			ext_len = ((__u32)ext[1] + 1) * 8;
		if (ext_len > remaining)
			return SEPTUM_DROP_INVALID_IPV6_EXTENSION_HEADER;
		nexthdr = ext[0];
		off += ext_len;
		remaining -= ext_len;
	}
	/* Still an extension header after the bound: a chain we refuse to walk. */
	if (nexthdr == SEPTUM_NEXTHDR_HOP || nexthdr == SEPTUM_NEXTHDR_ROUTING ||
	    nexthdr == SEPTUM_NEXTHDR_FRAGMENT || nexthdr == SEPTUM_NEXTHDR_AUTH ||
	    nexthdr == SEPTUM_NEXTHDR_DEST)
		return SEPTUM_DROP_INVALID_IPV6_EXTENSION_HEADER;
l4:
	pkt->protocol = nexthdr;
	if (off > SEPTUM_MAX_L4_OFFSET)
		return SEPTUM_DROP_INVALID_IPV6_EXTENSION_HEADER;
	return septum_parse_l4(data + off, data_end, remaining, ip6->hop_limit, pkt);
}

/* Returns SEPTUM_PARSE_OK, SEPTUM_PARSE_BYPASS or a drop reason. */
static __always_inline int septum_parse(void *data, void *data_end, __u32 wire_len,
					struct septum_pkt *pkt)
{
	struct ethhdr *eth = data;

	pkt->len = wire_len;
	if ((void *)(eth + 1) > data_end || wire_len < ETH_HLEN)
		return SEPTUM_DROP_TRUNCATED_ETHERNET;
	/* Inside the header just checked; events report them (Hubble's ethernet). */
	__builtin_memcpy(pkt->src_mac, eth->h_source, ETH_ALEN);
	__builtin_memcpy(pkt->dst_mac, eth->h_dest, ETH_ALEN);
	switch (eth->h_proto) {
	case bpf_htons(ETH_P_IP):
		return septum_parse_ipv4(data, data_end, wire_len, pkt);
	case bpf_htons(ETH_P_IPV6):
		return septum_parse_ipv6(data, data_end, wire_len, pkt);
	case bpf_htons(ETH_P_ARP):
		return SEPTUM_PARSE_BYPASS;
	default:
		return SEPTUM_DROP_UNSUPPORTED_L3_PROTOCOL;
	}
}

#endif
