/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The established fast path: most packets belong to an IPv4 TCP or UDP
 * connection conntrack already allowed, and need nothing but that entry.  It
 * reads just the headers that make the conntrack key, straight from the
 * packet (no septum_pkt, no Ethernet addresses), looks the flow up, and
 * finishes the packet when the full path would only refresh the entry and
 * count it.  Anything else (IPv6, IP options, fragments, other protocols,
 * headers beyond the linear data, a new TCP flag or the first reply (an
 * event is due), an expired, revoked or re-opened entry, revocation on policy
 * change, the benchmark flags) returns -1 for the full path, which then reuses
 * this lookup instead of repeating it.  The checks here are a subset of the
 * parser's: a packet the parser would drop never passes here.
 */
#ifndef SEPTUM_LIB_FASTPATH_H
#define SEPTUM_LIB_FASTPATH_H

#include "common.h"
#include "config.h"
#include "conntrack.h"
#include "counters.h"

#define SEPTUM_FAST_IPV4_NO_OPTIONS 0x45 /* version 4, IHL 5 */
#define SEPTUM_FAST_FRAGMENT_BITS 0x3fff /* MF + fragment offset */
#define SEPTUM_FAST_FULL_PATH_FLAGS                                                         \
	(SEPTUM_CFG_F_REVOKE_ON_POLICY_CHANGE | SEPTUM_CFG_F_BENCH_FORCE_NEW |               \
	 SEPTUM_CFG_F_BENCH_NEW_FLOWS)

/* Returns the tc verdict when the packet is done, -1 for the full path (with
 * ct->done set when the flow was looked up). */
static __always_inline int septum_fast_established(struct __sk_buff *skb, __u32 ifindex,
						   __u8 direction, const struct septum_config *cfg,
						   __u64 now, struct septum_ct_lookup *ct)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct iphdr *ip = data + ETH_HLEN;
	__be16 *ports = (void *)(ip + 1);
	struct septum_ct_entry *entry;
	__u32 wire_len = skb->len;
	__u32 total_len;
	__u8 tcp_flags = 0;
	__u8 is_reply;
	__u8 *flags_seen;
	__u64 expires;

	if ((cfg->flags & SEPTUM_FAST_FULL_PATH_FLAGS) || !septum_ct4_fits(ifindex))
		return -1;
	/* h_proto read as one 16-bit load (struct ethhdr is packed, which would
	 * make it two byte loads). */
	if ((void *)(ip + 1) > data_end ||
	    *(__be16 *)(data + offsetof(struct ethhdr, h_proto)) != bpf_htons(ETH_P_IP) ||
	    *(__u8 *)ip != SEPTUM_FAST_IPV4_NO_OPTIONS ||
	    (ip->frag_off & bpf_htons(SEPTUM_FAST_FRAGMENT_BITS)))
		return -1;
	total_len = bpf_ntohs(ip->tot_len);
	if (total_len > wire_len - ETH_HLEN)
		return -1;
	if (ip->protocol == IPPROTO_TCP) {
		struct tcphdr *tcp = (void *)(ip + 1);

		if ((void *)(tcp + 1) > data_end || total_len < sizeof(*ip) + sizeof(*tcp) ||
		    tcp->doff < 5 || (__u32)tcp->doff * 4 > total_len - sizeof(*ip))
			return -1;
		tcp_flags = ((__u8 *)tcp)[13];
	} else if (ip->protocol == IPPROTO_UDP) {
		if ((void *)(ports + 4) > data_end || total_len < sizeof(*ip) + 8)
			return -1;
	} else {
		return -1;
	}

	ct->order = septum_ct4_order(ip->saddr, ip->daddr, ports[0], ports[1]);
	septum_ct4_key_fill(&ct->key4, ip->saddr, ip->daddr, ports[0], ports[1], ifindex,
			    ip->protocol, ct->order);
	entry = bpf_map_lookup_elem(&sep_ct4, &ct->key4);
	ct->entry = entry;
	ct->done = 1;
	if (!entry)
		return -1;
	is_reply = direction != entry->orig_direction;
	flags_seen = is_reply ? &entry->rev_flags_seen : &entry->fwd_flags_seen;
	if (!septum_ct_matches(entry, ct->order, is_reply) || entry->expires < now ||
	    entry->verdict == SEPTUM_VERDICT_DROPPED || (tcp_flags & ~*flags_seen) ||
	    (is_reply && !entry->reply_seen) ||
	    septum_ct_is_reopen(entry, ip->protocol, tcp_flags))
		return -1;

	/* As septum_established: without a new flag the state cannot move. */
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
	return SEPTUM_TC_FORWARD;
}

#endif
