/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Connection tracking: an LRU hash of flows as their first packet had them,
 * per endpoint and direction.  A packet is "forward" when its own tuple is
 * found, a "reply" when its reversed tuple is found under the opposite
 * direction.  TCP state moves SYN_SENT -> ESTABLISHED -> CLOSING; every packet
 * pushes the deadline by the timeout of the state it leaves the entry in.
 */
#ifndef SEPTUM_LIB_CONNTRACK_H
#define SEPTUM_LIB_CONNTRACK_H

#include "common.h"
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

static __always_inline void septum_ct_key_fill(struct septum_ct_key *key,
					       const struct septum_pkt *pkt, __u32 ifindex,
					       __u8 direction)
{
	septum_copy16(key->src_addr, pkt->src);
	septum_copy16(key->dst_addr, pkt->dst);
	key->sport_be = pkt->sport_be;
	key->dport_be = pkt->dport_be;
	key->ifindex = ifindex;
	key->protocol = pkt->protocol;
	key->direction = direction;
	key->ip_version = pkt->ip_version;
}

static __always_inline void septum_ct_key_reverse(struct septum_ct_key *rev,
						  const struct septum_ct_key *key)
{
	septum_copy16(rev->src_addr, key->dst_addr);
	septum_copy16(rev->dst_addr, key->src_addr);
	rev->sport_be = key->dport_be;
	rev->dport_be = key->sport_be;
	rev->ifindex = key->ifindex;
	rev->protocol = key->protocol;
	rev->direction = septum_opposite(key->direction);
	rev->ip_version = key->ip_version;
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

static __always_inline __u64 septum_ct_timeout_ns(__u8 state, const struct septum_config *cfg)
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
	return (__u64)seconds * SEPTUM_NSEC_PER_SEC;
}

/* A fresh SYN on a closing entry is a new connection reusing the tuple. */
static __always_inline int septum_ct_is_reopen(const struct septum_ct_entry *entry,
					       const struct septum_pkt *pkt)
{
	return entry->state == SEPTUM_CT_CLOSING && pkt->protocol == IPPROTO_TCP &&
	       (pkt->tcp_flags & (SEPTUM_TCP_SYN | SEPTUM_TCP_ACK)) == SEPTUM_TCP_SYN;
}

#endif
