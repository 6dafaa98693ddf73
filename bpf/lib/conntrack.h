/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Connection tracking: LRU hashes of flows per endpoint interface (sep_ct4 for
 * IPv4 with a 16-byte key, sep_ct6 for IPv6), keyed by the tuple in canonical
 * order (lower address/port side first), so one lookup finds a connection
 * from either side.  The entry records the direction and
 * orientation of the first packet: a packet travelling the other direction is
 * a "reply".  TCP state moves SYN_SENT -> ESTABLISHED (first ACK without SYN)
 * -> CLOSING (FIN from both sides, or RST); every packet
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
 * garbage collection of expired entries: NodeDatapath.gc_conntrack).  Read by: the tc programs, every
 * packet; the agent, for listing. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct septum_ct4_key);
	__type(value, struct septum_ct_entry);
	__uint(max_entries, 65536);
} sep_ct4 SEC(".maps");

/* The same for IPv6. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct septum_ct_key);
	__type(value, struct septum_ct_entry);
	__uint(max_entries, 65536);
} sep_ct6 SEC(".maps");

/* One conntrack lookup's key and result (the fast path's, then the full
 * path's own). */
struct septum_ct_lookup {
	struct septum_ct_key key6 SEPTUM_ALIGNED;
	struct septum_ct4_key key4;
	struct septum_ct_entry *entry;
	int order;
	__u8 done;
};

/* Order of an IPv4 flow's (source) and (destination) sides: <0, 0 or >0.  Any
 * total order works as long as both directions, and the fast and full paths,
 * agree; 0 only for a flow to itself (same address and port), whose direction
 * tells the sides apart.  Addresses and ports as loaded (network order). */
static __always_inline int septum_ct4_order(__u32 src, __u32 dst, __u16 sport_be,
					    __u16 dport_be)
{
	if (src != dst)
		return src < dst ? -1 : 1;
	if (sport_be != dport_be)
		return sport_be < dport_be ? -1 : 1;
	return 0;
}

/* Whether the interface's IPv4 flows fit sep_ct4's key (see septum_ct4_key). */
static __always_inline int septum_ct4_fits(__u32 ifindex)
{
	return ifindex <= SEPTUM_CT4_IFINDEX_MASK;
}

static __always_inline void septum_ct4_key_fill(struct septum_ct4_key *key, __u32 src, __u32 dst,
						__u16 sport_be, __u16 dport_be, __u32 ifindex,
						__u8 protocol, int order)
{
	if (order > 0) {
		*(__u32 *)key->src_addr = dst;
		*(__u32 *)key->dst_addr = src;
		key->sport_be = dport_be;
		key->dport_be = sport_be;
	} else {
		*(__u32 *)key->src_addr = src;
		*(__u32 *)key->dst_addr = dst;
		key->sport_be = sport_be;
		key->dport_be = dport_be;
	}
	key->ifindex_protocol = ifindex | (__u32)protocol << SEPTUM_CT4_IFINDEX_BITS;
}

/* The same order for 16-byte addresses (compared as two words): IPv6, and the
 * IPv4 flows of an interface whose index does not fit sep_ct4. */
static __always_inline int septum_ct6_order(const struct septum_pkt *pkt)
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

static __always_inline void septum_ct6_key_fill(struct septum_ct_key *key,
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

/* Whether the packet's flow lives in sep_ct4 (else sep_ct6). */
static __always_inline int septum_ct_uses_ct4(const struct septum_pkt *pkt, __u32 ifindex)
{
	return pkt->ip_version == SEPTUM_IP_V4 && septum_ct4_fits(ifindex);
}

/* Look the packet's flow up (IPv4 or IPv6 table); fills ct (order, key, entry).
 * known_absent: the caller knows the entry does not exist (only the key is built). */
static __always_inline void septum_ct_find(struct septum_ct_lookup *ct,
					   const struct septum_pkt *pkt, __u32 ifindex,
					   __u32 known_absent)
{
	if (septum_ct_uses_ct4(pkt, ifindex)) {
		__u32 src = *(const __u32 *)pkt->src;
		__u32 dst = *(const __u32 *)pkt->dst;

		ct->order = septum_ct4_order(src, dst, pkt->sport_be, pkt->dport_be);
		septum_ct4_key_fill(&ct->key4, src, dst, pkt->sport_be, pkt->dport_be, ifindex,
				    pkt->protocol, ct->order);
		ct->entry = known_absent ? NULL : bpf_map_lookup_elem(&sep_ct4, &ct->key4);
	} else {
		ct->order = septum_ct6_order(pkt);
		__builtin_memset(&ct->key6, 0, sizeof(ct->key6));
		septum_ct6_key_fill(&ct->key6, pkt, ifindex, ct->order);
		ct->entry = known_absent ? NULL : bpf_map_lookup_elem(&sep_ct6, &ct->key6);
	}
	ct->done = 1;
}

/* Insert (or replace) the flow's entry under the key septum_ct_find built. */
static __always_inline long septum_ct_insert(const struct septum_ct_lookup *ct,
					     const struct septum_pkt *pkt, __u32 ifindex,
					     const struct septum_ct_entry *entry)
{
	if (septum_ct_uses_ct4(pkt, ifindex))
		return bpf_map_update_elem(&sep_ct4, &ct->key4, entry, BPF_ANY);
	return bpf_map_update_elem(&sep_ct6, &ct->key6, entry, BPF_ANY);
}

/* Whether the entry found under the packet's canonical key is its own
 * connection seen from the side the direction says (a packet with the first
 * packet's orientation but the other direction is not part of it). */
static __always_inline int septum_ct_matches(const struct septum_ct_entry *entry, int order,
					     __u8 is_reply)
{
	return order == 0 || ((__u8)(order > 0) != entry->orig_swapped) == is_reply;
}

/* ICMP is tracked for echoes only (keyed by their identifier): a request
 * travels the connection's way and a reply the other way, so a peer's request
 * reusing the identifier of the pod's own ping is not that ping's reply.  Any
 * other ICMP message (errors excepted: see septum_icmp_related) is decided by
 * policy on its own, never by an entry: its type is not in the key. */
static __always_inline int septum_ct_icmp_tracked(const struct septum_pkt *pkt)
{
	if (pkt->protocol == IPPROTO_ICMP)
		return pkt->icmp_type == SEPTUM_ICMP_ECHO || pkt->icmp_type == SEPTUM_ICMP_ECHOREPLY;
	if (pkt->protocol == IPPROTO_ICMPV6)
		return pkt->icmp_type == SEPTUM_ICMPV6_ECHO_REQUEST ||
		       pkt->icmp_type == SEPTUM_ICMPV6_ECHO_REPLY;
	return 1;
}

static __always_inline int septum_ct_icmp_matches(const struct septum_pkt *pkt, __u8 is_reply)
{
	if (pkt->protocol == IPPROTO_ICMP)
		return pkt->icmp_type == (is_reply ? SEPTUM_ICMP_ECHOREPLY : SEPTUM_ICMP_ECHO);
	if (pkt->protocol == IPPROTO_ICMPV6)
		return pkt->icmp_type ==
		       (is_reply ? SEPTUM_ICMPV6_ECHO_REPLY : SEPTUM_ICMPV6_ECHO_REQUEST);
	return 1;
}

/* The connection's tuple as its first packet had it (for policy re-checks):
 * the packet's own, turned around for a reply. */
static __always_inline void septum_ct_original(struct septum_ct_key *orig,
					       const struct septum_pkt *pkt, __u8 is_reply,
					       __u8 orig_direction)
{
	if (is_reply) {
		septum_copy16(orig->src_addr, pkt->dst);
		septum_copy16(orig->dst_addr, pkt->src);
		orig->sport_be = pkt->dport_be;
		orig->dport_be = pkt->sport_be;
	} else {
		septum_copy16(orig->src_addr, pkt->src);
		septum_copy16(orig->dst_addr, pkt->dst);
		orig->sport_be = pkt->sport_be;
		orig->dport_be = pkt->dport_be;
	}
	orig->protocol = pkt->protocol;
	orig->direction = orig_direction;
	orig->ip_version = pkt->ip_version;
}

/* TCP states follow Cilium's: a connection is alive while either side has not
 * closed.  SYN_SENT until the handshake is done (a packet with ACK and without
 * SYN: a SYN-ACK alone, as a pod answering a SYN flood sends, keeps the short
 * SYN timeout); ESTABLISHED, half-closed included (one side's FIN: the other
 * may keep sending for as long as it likes); CLOSING once both sides have sent
 * a FIN, or on RST. */
static __always_inline __u8 septum_ct_initial_state(const struct septum_pkt *pkt)
{
	if (pkt->protocol != IPPROTO_TCP)
		return SEPTUM_CT_NEW;
	if (pkt->tcp_flags & SEPTUM_TCP_RST)
		return SEPTUM_CT_CLOSING;
	if (pkt->tcp_flags & SEPTUM_TCP_SYN)
		return SEPTUM_CT_SYN_SENT;
	/* Mid-stream pickup (e.g. after an agent restart emptied the table); a
	 * FIN alone closes only its own side. */
	return SEPTUM_CT_ESTABLISHED;
}

/* other_flags_seen: the TCP flags the other direction has sent so far. */
static __always_inline __u8 septum_ct_next_state(__u8 state, const struct septum_pkt *pkt,
						 __u8 other_flags_seen)
{
	__u8 flags = pkt->tcp_flags;

	if (pkt->protocol != IPPROTO_TCP)
		return state;
	if ((flags & SEPTUM_TCP_RST) ||
	    ((flags & SEPTUM_TCP_FIN) && (other_flags_seen & SEPTUM_TCP_FIN)))
		return SEPTUM_CT_CLOSING;
	if (state == SEPTUM_CT_SYN_SENT &&
	    (flags & (SEPTUM_TCP_SYN | SEPTUM_TCP_ACK)) == SEPTUM_TCP_ACK)
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
					       __u8 protocol, __u8 tcp_flags)
{
	return entry->state == SEPTUM_CT_CLOSING && protocol == IPPROTO_TCP &&
	       (tcp_flags & (SEPTUM_TCP_SYN | SEPTUM_TCP_ACK)) == SEPTUM_TCP_SYN;
}

#endif
