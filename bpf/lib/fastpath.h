/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The established fast path: most packets belong to a TCP or UDP connection
 * (IPv4 or IPv6) conntrack already allowed, and need nothing but that entry.
 * It reads just the headers that make the conntrack key, straight from the
 * packet (no septum_pkt, no Ethernet addresses), looks the flow up, and
 * finishes the packet when the full path would only refresh the entry and
 * count it.  Anything else (IPv4 options, IPv6 extension headers, fragments,
 * other protocols, headers beyond the linear data, a new TCP flag or the
 * first reply (an event is due), a handshake not yet done (SYN_SENT), an
 * expired, revoked or re-opened entry,
 * revocation on policy change, the benchmark flags) returns SEPTUM_CONTINUE
 * for the full path; when the lookup found nothing, the full path is told so
 * and skips its own (new connections and denies pay one lookup).  The checks here are a
 * subset of the parser's: a packet the parser would drop never passes here.
 */
#ifndef SEPTUM_LIB_FASTPATH_H
#define SEPTUM_LIB_FASTPATH_H

#include "common.h"
#include "config.h"
#include "parse.h"
#include "conntrack.h"
#include "counters.h"

#define SEPTUM_FAST_FULL_PATH_FLAGS                                                         \
	(SEPTUM_CFG_F_REVOKE_ON_POLICY_CHANGE | SEPTUM_CFG_F_BENCH_FORCE_NEW |               \
	 SEPTUM_CFG_F_BENCH_NEW_FLOWS)

/* Whether the header at l4 (l4_len bytes claimed by the IP header) is TCP or
 * UDP as the parser would accept it; sets the TCP flags. */
static __always_inline int septum_fast_l4_ok(void *l4, void *data_end, __u8 protocol,
					     __u32 l4_len, __u8 *tcp_flags)
{
	if (protocol == IPPROTO_TCP) {
		struct tcphdr *tcp = l4;

		if ((void *)(tcp + 1) > data_end || l4_len < sizeof(*tcp) ||
		    tcp->doff < SEPTUM_TCP_MIN_DOFF || (__u32)tcp->doff * 4 > l4_len)
			return 0;
		*tcp_flags = septum_tcp_flags(tcp);
		return 1;
	}
	if (protocol == IPPROTO_UDP) {
		if (l4 + sizeof(struct udphdr) > data_end || l4_len < sizeof(struct udphdr))
			return 0;
		return 1;
	}
	return 0;
}

/* IPv4 without options, not a fragment: looks the flow up in sep_ct4.
 * Returns whether it did (0: not a packet for the fast path). */
static __always_inline int septum_fast_lookup4(void *data, void *data_end, __u32 wire_len,
					       __u32 ifindex, struct septum_ct_lookup *ct,
					       __u8 *protocol, __u8 *tcp_flags)
{
	struct iphdr *ip = data + ETH_HLEN;
	__be16 *ports = (void *)(ip + 1);
	__u32 total_len;

	if (!septum_ct4_fits(ifindex) || (void *)(ip + 1) > data_end ||
	    *(__u8 *)ip != SEPTUM_IPV4_NO_OPTIONS ||
	    (ip->frag_off & bpf_htons(SEPTUM_IPV4_FRAG_BITS)))
		return 0;
	total_len = bpf_ntohs(ip->tot_len);
	if (total_len > wire_len - ETH_HLEN || total_len < sizeof(*ip) ||
	    !septum_fast_l4_ok(ports, data_end, ip->protocol, total_len - sizeof(*ip), tcp_flags))
		return 0;
	*protocol = ip->protocol;
	ct->order = septum_ct4_order(ip->saddr, ip->daddr, ports[0], ports[1]);
	septum_ct4_key_fill(&ct->key4, ip->saddr, ip->daddr, ports[0], ports[1], ifindex,
			    ip->protocol, ct->order);
	ct->entry = bpf_map_lookup_elem(&sep_ct4, &ct->key4);
	ct->done = 1;
	return 1;
}

/* IPv6 with TCP or UDP right after the fixed header (no extension headers):
 * looks the flow up in sep_ct6.  Returns whether it did. */
static __always_inline int septum_fast_lookup6(void *data, void *data_end, __u32 wire_len,
					       __u32 ifindex, struct septum_ct_lookup *ct,
					       __u8 *protocol, __u8 *tcp_flags)
{
	struct ipv6hdr *ip6 = data + ETH_HLEN;
	__be16 *ports = (void *)(ip6 + 1);
	const __u64 *src = (const __u64 *)&ip6->saddr;
	const __u64 *dst = (const __u64 *)&ip6->daddr;
	struct septum_ct_key *key = &ct->key6;
	__u32 payload_len;
	int order;

	if ((void *)(ip6 + 1) > data_end || (*(__u8 *)ip6 >> 4) != 6)
		return 0;
	payload_len = bpf_ntohs(ip6->payload_len);
	if (payload_len + sizeof(*ip6) > wire_len - ETH_HLEN ||
	    !septum_fast_l4_ok(ports, data_end, ip6->nexthdr, payload_len, tcp_flags))
		return 0;
	*protocol = ip6->nexthdr;
	/* As septum_ct6_order and septum_ct6_key_fill, from the packet. */
	if (src[0] != dst[0])
		order = src[0] < dst[0] ? -1 : 1;
	else if (src[1] != dst[1])
		order = src[1] < dst[1] ? -1 : 1;
	else if (ports[0] != ports[1])
		order = ports[0] < ports[1] ? -1 : 1;
	else
		order = 0;
	__builtin_memset(key, 0, sizeof(*key));
	if (order > 0) {
		septum_copy16(key->src_addr, (const __u8 *)dst);
		septum_copy16(key->dst_addr, (const __u8 *)src);
		key->sport_be = ports[1];
		key->dport_be = ports[0];
	} else {
		septum_copy16(key->src_addr, (const __u8 *)src);
		septum_copy16(key->dst_addr, (const __u8 *)dst);
		key->sport_be = ports[0];
		key->dport_be = ports[1];
	}
	key->ifindex = ifindex;
	key->protocol = ip6->nexthdr;
	key->ip_version = SEPTUM_IP_V6;
	ct->order = order;
	ct->entry = bpf_map_lookup_elem(&sep_ct6, key);
	ct->done = 1;
	return 1;
}

/* Returns the tc verdict when the packet is done, SEPTUM_CONTINUE for the
 * full path (with ct->done set when the flow was looked up). */
static __always_inline int septum_fast_established(struct __sk_buff *skb,
						   const struct septum_hook *hook,
						   const struct septum_config *cfg,
						   __u64 now, struct septum_ct_lookup *ct)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct septum_ct_entry *entry;
	__u32 wire_len = skb->len;
	__u8 tcp_flags = 0;
	__u8 protocol = 0;
	__u8 is_reply;
	__u32 ifindex = hook->ifindex;
	__u8 direction = hook->direction;
	__u8 *flags_seen;
	__u64 expires;
	__be16 proto;

	if ((cfg->flags & SEPTUM_FAST_FULL_PATH_FLAGS) || data + ETH_HLEN > data_end)
		return SEPTUM_CONTINUE;
	/* h_proto read as one 16-bit load (struct ethhdr is packed, which would
	 * make it two byte loads). */
	proto = *(__be16 *)(data + offsetof(struct ethhdr, h_proto));
	if (proto == bpf_htons(ETH_P_IP)) {
		if (!septum_fast_lookup4(data, data_end, wire_len, ifindex, ct, &protocol,
					 &tcp_flags))
			return SEPTUM_CONTINUE;
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		if (!septum_fast_lookup6(data, data_end, wire_len, ifindex, ct, &protocol,
					 &tcp_flags))
			return SEPTUM_CONTINUE;
	} else {
		return SEPTUM_CONTINUE;
	}
	entry = ct->entry;
	if (!entry)
		return SEPTUM_CONTINUE;
	is_reply = direction != entry->orig_direction;
	flags_seen = is_reply ? &entry->rev_flags_seen : &entry->fwd_flags_seen;
	if (!septum_ct_matches(entry, ct->order, is_reply) || entry->expires < now ||
	    entry->verdict == SEPTUM_VERDICT_DROPPED || (tcp_flags & ~*flags_seen) ||
	    (is_reply && !(entry->flags & SEPTUM_CT_F_REPLY_SEEN)) || entry->state == SEPTUM_CT_SYN_SENT ||
	    (entry->l7_proxy_port && !is_reply) || /* to the L7 proxy: the full path */
	    septum_ct_is_reopen(entry, protocol, tcp_flags))
		return SEPTUM_CONTINUE;

	/* As septum_established: without a new flag, and out of SYN_SENT, the
	 * state cannot move (an RST or a FIN that closes the second side is new
	 * in its direction; the handshake's last ACK may not be: the reply side
	 * sent one in its SYN-ACK, so SYN_SENT always takes the full path). */
	expires = now + septum_ct_timeout(entry->state, cfg);
	if (entry->expires != expires)
		entry->expires = expires;
	if (is_reply) {
		entry->rev_packets += 1;
		entry->rev_bytes += wire_len;
	} else {
		entry->fwd_packets += 1;
		entry->fwd_bytes += wire_len;
	}
	septum_count(direction, entry->verdict, SEPTUM_DROP_NONE, wire_len);
	/* Delivered by the source's program from now on, both ways (an entry from
	 * before: the other side's was lost and made again, see localdelivery.h). */
	if ((hook->flags & SEPTUM_HOOK_F_DELIVERY_TARGET) && !(entry->flags & SEPTUM_CT_F_LOCAL))
		entry->flags |= SEPTUM_CT_F_LOCAL;
	if ((hook->flags & SEPTUM_HOOK_F_DELIVERY_SOURCE) && (entry->flags & SEPTUM_CT_F_LOCAL))
		return SEPTUM_FORWARD_LOCAL;
	return SEPTUM_TC_FORWARD;
}

#endif
