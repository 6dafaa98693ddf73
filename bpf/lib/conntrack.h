/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Connection tracking: an LRU hash of flows per endpoint interface, keyed by
 * the tuple in canonical order (lower address/port side first), so one lookup
 * finds a connection from either side.  The entry records the direction and
 * orientation of the first packet: a packet travelling the other direction is
 * a "reply".  TCP state moves SYN_SENT -> ESTABLISHED -> CLOSING; every packet
 * pushes the deadline (jiffies) by the timeout of the state it leaves the
 * entry in.
 */
#ifndef SEPTUM_LIB_CONNTRACK_H
#define SEPTUM_LIB_CONNTRACK_H

#include "common.h"
#include "config.h"
#include "parse.h"

/* Written by: the tc programs (insert on a new allowed/audited connection,
 * state/counters on every packet), the agent (flush on endpoint removal,
 * garbage collection of expired entries).  Read by: the tc programs, every
 * packet; the agent, for listing. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct septum_ct_key);
	__type(value, struct septum_ct_entry);
	__uint(max_entries, 65536);
} sep_ct SEC(".maps");

/* Order of the packet's (source) and (destination) sides: <0, 0 or >0.  Any
 * total order works as long as both directions agree; 0 only for a flow to
 * itself (same address and port), whose direction tells the sides apart. */
static __always_inline int septum_ct_order(const struct septum_pkt *pkt)
{
	const __u64 *s = (const __u64 *)pkt->src;
	const __u64 *d = (const __u64 *)pkt->dst;

	if (s[0] != d[0])
		return s[0] < d[0] ? -1 : 1;
	if (s[1] != d[1])
		return s[1] < d[1] ? -1 : 1;
	if (pkt->sport_be != pkt->dport_be)
		return pkt->sport_be < pkt->dport_be ? -1 : 1;
	return 0;
}

/* The canonical key of the packet's flow; `order` from septum_ct_order. */
static __always_inline void septum_ct_key_fill(struct septum_ct_key *key,
					       const struct septum_pkt *pkt, __u32 ifindex,
					       int order)
{
	if (order > 0) {
		septum_copy16(key->src_addr, pkt->dst);
		septum_copy16(key->dst_addr, pkt->src);
		key->sport_be = pkt->dport_be;
		key->dport_be = pkt->sport_be;
	} else {
		septum_copy16(key->src_addr, pkt->src);
		septum_copy16(key->dst_addr, pkt->dst);
		key->sport_be = pkt->sport_be;
		key->dport_be = pkt->dport_be;
	}
	key->ifindex = ifindex;
	key->protocol = pkt->protocol;
	key->ip_version = pkt->ip_version;
}

/* Whether the entry found under the packet's canonical key is its own
 * connection seen from the side the direction says (a packet with the first
 * packet's orientation but the other direction is not part of it). */
static __always_inline int septum_ct_matches(const struct septum_ct_entry *entry, int order,
					     __u8 is_reply)
{
	return order == 0 || ((__u8)(order > 0) != entry->orig_swapped) == is_reply;
}

/* The connection's tuple as its first packet had it (for policy re-checks). */
static __always_inline void septum_ct_original(struct septum_ct_key *orig,
					       const struct septum_ct_key *key,
					       const struct septum_ct_entry *entry)
{
	if (entry->orig_swapped) {
		septum_copy16(orig->src_addr, key->dst_addr);
		septum_copy16(orig->dst_addr, key->src_addr);
		orig->sport_be = key->dport_be;
		orig->dport_be = key->sport_be;
	} else {
		septum_copy16(orig->src_addr, key->src_addr);
		septum_copy16(orig->dst_addr, key->dst_addr);
		orig->sport_be = key->sport_be;
		orig->dport_be = key->dport_be;
	}
	orig->ifindex = key->ifindex;
	orig->protocol = key->protocol;
	orig->direction = entry->orig_direction;
	orig->ip_version = key->ip_version;
}

static __always_inline __u8 septum_ct_initial_state(const struct septum_pkt *pkt)
{
	if (pkt->protocol != IPPROTO_TCP)
		return SEPTUM_CT_NEW;
	if (pkt->tcp_flags & (SEPTUM_TCP_RST | SEPTUM_TCP_FIN))
		return SEPTUM_CT_CLOSING;
	if ((pkt->tcp_flags & (SEPTUM_TCP_SYN | SEPTUM_TCP_ACK)) == SEPTUM_TCP_SYN)
		return SEPTUM_CT_SYN_SENT;
	/* Mid-stream pickup (e.g. after an agent restart emptied the table). */
	return SEPTUM_CT_ESTABLISHED;
}

static __always_inline __u8 septum_ct_next_state(__u8 state, const struct septum_pkt *pkt)
{
	if (pkt->protocol != IPPROTO_TCP)
		return state;
	if (pkt->tcp_flags & (SEPTUM_TCP_RST | SEPTUM_TCP_FIN))
		return SEPTUM_CT_CLOSING;
	if (state == SEPTUM_CT_SYN_SENT && (pkt->tcp_flags & SEPTUM_TCP_ACK))
		return SEPTUM_CT_ESTABLISHED;
	return state;
}

/* In jiffies. */
static __always_inline __u64 septum_ct_timeout(__u8 state, const struct septum_config *cfg)
{
	__u32 seconds;

	switch (state) {
	case SEPTUM_CT_SYN_SENT:
		seconds = cfg->ct_timeout_tcp_syn_s;
		break;
	case SEPTUM_CT_ESTABLISHED:
		seconds = cfg->ct_timeout_tcp_established_s;
		break;
	case SEPTUM_CT_CLOSING:
		seconds = cfg->ct_timeout_tcp_close_s;
		break;
	default:
		seconds = cfg->ct_timeout_other_s;
	}
	return septum_seconds(seconds, cfg);
}

/* A fresh SYN on a closing entry is a new connection reusing the tuple. */
static __always_inline int septum_ct_is_reopen(const struct septum_ct_entry *entry,
					       const struct septum_pkt *pkt)
{
	return entry->state == SEPTUM_CT_CLOSING && pkt->protocol == IPPROTO_TCP &&
	       (pkt->tcp_flags & (SEPTUM_TCP_SYN | SEPTUM_TCP_ACK)) == SEPTUM_TCP_SYN;
}

#endif
