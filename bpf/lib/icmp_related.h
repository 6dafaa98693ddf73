/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ICMP errors related to a tracked connection.  An ICMP error about a
 * connection conntrack tracks is part of that connection (Cilium's
 * "related"): a router's "fragmentation needed" or IPv6 "packet too big" for
 * an allowed flow (path MTU discovery), a port unreachable answering an
 * allowed UDP query.  The quoted packet names the flow; it travelled the
 * other way.  When its entry exists, is alive, is not revoked and matches the
 * quoted packet's direction, the error is forwarded with the connection's
 * verdict, counted and reported (a trace event flagged RELATED, the error's
 * own addresses).  Anything else continues on the full path, where policy
 * decides the error like any new ICMP packet.
 */
#ifndef SEPTUM_LIB_ICMP_RELATED_H
#define SEPTUM_LIB_ICMP_RELATED_H

#include "common.h"
#include "config.h"
#include "parse.h"
#include "endpoint.h"
#include "ipcache.h"
#include "conntrack.h"
#include "counters.h"
#include "events.h"

/* Bytes of the quoted packet's L4 header an error carries at least (RFC 792):
 * the ports of TCP, UDP and SCTP, the identifier of an ICMP echo. */
#define SEPTUM_ICMP_QUOTED_L4_LEN 8

/* Whether the packet is an ICMP or ICMPv6 error in its simplest form (no IPv4
 * options, no IPv6 extension headers, not a fragment): the only packets
 * septum_icmp_related looks at.  Two or three loads on the way to the full path. */
static __always_inline int septum_maybe_icmp_error(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	__be16 proto;

	if (data + ETH_HLEN + sizeof(struct ipv6hdr) + 1 > data_end)
		return 0; /* shorter than an IPv6 header + type: not worth a call */
	proto = *(__be16 *)(data + offsetof(struct ethhdr, h_proto));
	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = data + ETH_HLEN;
		__u8 type = *(__u8 *)(ip + 1);

		/* the IPv4 errors that quote the offending packet */
		return *(__u8 *)ip == SEPTUM_IPV4_NO_OPTIONS && ip->protocol == IPPROTO_ICMP &&
		       (type == SEPTUM_ICMP_DEST_UNREACH || type == SEPTUM_ICMP_TIME_EXCEEDED ||
			type == SEPTUM_ICMP_PARAMETER_PROBLEM);
	}
	if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = data + ETH_HLEN;
		__u8 type = *(__u8 *)(ip6 + 1);

		/* every ICMPv6 error type, packet too big included */
		return ip6->nexthdr == IPPROTO_ICMPV6 && type >= SEPTUM_ICMPV6_DEST_UNREACH &&
		       type <= SEPTUM_ICMPV6_PARAMETER_PROBLEM;
	}
	return 0;
}

/* Reads the error (outer: its addresses, ICMP type and code, Ethernet
 * addresses and length) and the flow of the packet it quotes (inner: IPv4
 * without options or IPv6 without extension headers, and the first bytes of
 * its TCP, UDP, SCTP or ICMP echo header).  Returns whether the packet is
 * such an error: 0 for anything the quote does not name a trackable flow in. */
static __always_inline int septum_icmp_error_read(struct __sk_buff *skb, struct septum_pkt *outer,
						  struct septum_pkt *inner)
{
	__u8 l4[SEPTUM_ICMP_QUOTED_L4_LEN];
	__be16 proto;
	__u32 quoted;

	/* the frame's own Ethernet type, as septum_maybe_icmp_error read it */
	if (bpf_skb_load_bytes(skb, 0, outer->dst_mac, ETH_ALEN) ||
	    bpf_skb_load_bytes(skb, ETH_ALEN, outer->src_mac, ETH_ALEN) ||
	    bpf_skb_load_bytes(skb, offsetof(struct ethhdr, h_proto), &proto, sizeof(proto)))
		return 0;
	outer->len = skb->len;
	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr ip;

		/* the error's IPv4 header, its ICMP type and code, then the quote's */
		if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip, sizeof(ip)) ||
		    ip.ihl != SEPTUM_IPV4_MIN_IHL || ip.protocol != IPPROTO_ICMP ||
		    (ip.frag_off & bpf_htons(SEPTUM_IPV4_FRAG_BITS)))
			return 0;
		*(__u32 *)outer->src = ip.saddr;
		*(__u32 *)outer->dst = ip.daddr;
		outer->ip_version = SEPTUM_IP_V4;
		outer->protocol = IPPROTO_ICMP;
		if (bpf_skb_load_bytes(skb, ETH_HLEN + sizeof(ip), l4, 2))
			return 0;
		quoted = ETH_HLEN + sizeof(ip) + sizeof(struct septum_icmphdr);
		if (bpf_skb_load_bytes(skb, quoted, &ip, sizeof(ip)) ||
		    ip.ihl != SEPTUM_IPV4_MIN_IHL || (ip.frag_off & bpf_htons(SEPTUM_IPV4_FRAG_OFFSET)))
			return 0; /* options, or a later fragment (no L4 header quoted) */
		*(__u32 *)inner->src = ip.saddr;
		*(__u32 *)inner->dst = ip.daddr;
		inner->ip_version = SEPTUM_IP_V4;
		inner->protocol = ip.protocol;
		quoted += sizeof(ip);
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr ip6;

		if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip6, sizeof(ip6)) ||
		    ip6.nexthdr != IPPROTO_ICMPV6)
			return 0;
		septum_copy16_unaligned(outer->src, (const __u8 *)&ip6.saddr);
		septum_copy16_unaligned(outer->dst, (const __u8 *)&ip6.daddr);
		outer->ip_version = SEPTUM_IP_V6;
		outer->protocol = IPPROTO_ICMPV6;
		if (bpf_skb_load_bytes(skb, ETH_HLEN + sizeof(ip6), l4, 2))
			return 0;
		quoted = ETH_HLEN + sizeof(ip6) + sizeof(struct septum_icmphdr);
		if (bpf_skb_load_bytes(skb, quoted, &ip6, sizeof(ip6)))
			return 0;
		septum_copy16_unaligned(inner->src, (const __u8 *)&ip6.saddr);
		septum_copy16_unaligned(inner->dst, (const __u8 *)&ip6.daddr);
		inner->ip_version = SEPTUM_IP_V6;
		inner->protocol = ip6.nexthdr; /* an extension header here: no entry matches */
		quoted += sizeof(ip6);
	} else {
		return 0;
	}
	outer->icmp_type = l4[0];
	outer->icmp_code = l4[1];
	outer->policy_port_be = bpf_htons(SEPTUM_POLICY_ICMP_TYPE | l4[0]);
	if (bpf_skb_load_bytes(skb, quoted, l4, sizeof(l4)))
		return 0;
	switch (inner->protocol) {
	case IPPROTO_TCP:
	case IPPROTO_UDP:
	case IPPROTO_SCTP:
		inner->sport_be = *(__be16 *)&l4[0];
		inner->dport_be = *(__be16 *)&l4[2];
		return 1;
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6:
		/* an echo (request or reply) is tracked under its identifier, twice */
		if (l4[0] != SEPTUM_ICMP_ECHO && l4[0] != SEPTUM_ICMP_ECHOREPLY &&
		    l4[0] != SEPTUM_ICMPV6_ECHO_REQUEST && l4[0] != SEPTUM_ICMPV6_ECHO_REPLY)
			return 0;
		inner->sport_be = *(__be16 *)&l4[4];
		inner->dport_be = inner->sport_be;
		return 1;
	default:
		return 0;
	}
}

/* Returns the tc verdict for an error related to a live connection, or
 * SEPTUM_CONTINUE for the full path.  A global function: its own stack frame
 * and verification, called only for packets septum_maybe_icmp_error picked. */
__attribute__((noinline)) int septum_icmp_related(struct __sk_buff *skb, __u32 ifindex,
						  __u32 direction, __u32 point_flags)
{
	const struct septum_hook hook = {
		.ifindex = ifindex,
		.direction = direction,
		.trace_point = point_flags & 0xff,
		.flags = point_flags >> 8,
	};
	struct septum_pkt outer = {};
	struct septum_pkt inner = {};
	struct septum_report report = {};
	struct septum_ct_lookup ct;
	const struct septum_endpoint *ep;
	struct septum_ct_entry *entry;
	__u8 inner_direction = septum_opposite(direction);
	__u8 is_reply;

	if (!septum_icmp_error_read(skb, &outer, &inner))
		return SEPTUM_CONTINUE;
	/* An error goes back to the quoted packet's sender: anything else (a pod
	 * "reporting" a tracked flow to a third host) is no part of the flow. */
	if (!septum_addr_equal16(outer.dst, inner.src))
		return SEPTUM_CONTINUE;
	septum_ct_find(&ct, &inner, ifindex, 0);
	entry = ct.entry;
	if (!entry)
		return SEPTUM_CONTINUE;
	is_reply = inner_direction != entry->orig_direction;
	if (!septum_ct_matches(entry, ct.order, is_reply) || entry->expires < septum_now() ||
	    entry->verdict == SEPTUM_VERDICT_DROPPED)
		return SEPTUM_CONTINUE;
	ep = septum_endpoint_lookup(ifindex); /* errors are rare */
	if (!ep || (direction == SEPTUM_DIR_EGRESS && (ep->flags & SEPTUM_EP_F_CHECK_SOURCE) &&
		    !septum_endpoint_owns_source(ep, outer.src, outer.ip_version)))
		return SEPTUM_CONTINUE; /* the full path drops it with its reason */
	if ((septum_config_get()->flags & SEPTUM_CFG_F_REVOKE_ON_POLICY_CHANGE) &&
	    entry->policy_revision != ep->policy_revision)
		return SEPTUM_CONTINUE; /* the connection awaits its re-check: policy decides */

	septum_count(direction, entry->verdict, SEPTUM_DROP_NONE, outer.len);
	septum_report_fill(&report, &hook, ep, septum_peer_identity(&outer, direction),
			   SEPTUM_EVENT_TRACE, entry->verdict);
	report.bytes = outer.len;
	report.packets = 1;
	report.rule_id = entry->rule_id;
	report.match_type = entry->match_type;
	report.direction = entry->orig_direction; /* the connection's */
	report.is_reply = !is_reply; /* the error travels against the quoted packet */
	report.flags |= SEPTUM_EVENT_F_RELATED;
	septum_emit(&outer, &report);
	/* An error about a locally delivered connection goes the connection's way:
	 * the node's netfilter never saw it, and would call the error INVALID. */
	if ((hook.flags & SEPTUM_HOOK_F_DELIVERY_SOURCE) && (entry->flags & SEPTUM_CT_F_LOCAL))
		return SEPTUM_FORWARD_LOCAL;
	return SEPTUM_TC_FORWARD;
}

#endif
