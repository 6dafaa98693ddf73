/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fragment tracking.  Decision (docs/datapath.md): track, do not drop.  The
 * first fragment records its L4 protocol and ports keyed by (addresses, IP id,
 * and for IPv4 the protocol); later
 * fragments take them, so they meet the same conntrack entry and the same
 * verdict as their first fragment.  A later fragment whose first was
 * never seen (lost, reordered, or an evasion attempt) is dropped with
 * FRAG_NOT_FOUND: the datapath cannot know its ports, and forwarding it would
 * bypass port policy.
 */
#ifndef SEPTUM_LIB_FRAGMENTS_H
#define SEPTUM_LIB_FRAGMENTS_H

#include "common.h"
#include "parse.h"

/* Written by: the tc programs (first fragments).  Read by: the tc programs
 * (later fragments).  LRU: datagrams that never complete age out. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct septum_frag_key);
	__type(value, struct septum_frag_value);
	__uint(max_entries, 8192);
} sep_frags SEC(".maps");

static __always_inline void septum_frag_key_fill(struct septum_frag_key *key,
						 const struct septum_pkt *pkt)
{
	septum_copy16(key->src_addr, pkt->src);
	septum_copy16(key->dst_addr, pkt->dst);
	key->id = pkt->frag_id;
	/* IPv6: no protocol.  A later fragment cannot know the L4 protocol when
	 * extension headers follow the Fragment header (Fragment -> Destination
	 * Options -> UDP), and the identification is unique per address pair
	 * anyway (RFC 8200; Linux reassembles IPv6 by addresses and id alone).
	 * IPv4 fragments all carry the protocol, part of the datagram's
	 * identity there (RFC 791). */
	key->protocol = pkt->ip_version == SEPTUM_IP_V4 ? pkt->protocol : 0;
	key->ip_version = pkt->ip_version;
}

/* Returns SEPTUM_PARSE_OK, or FRAG_NOT_FOUND for an orphan later fragment. */
static __always_inline int septum_frag_resolve(struct septum_pkt *pkt)
{
	struct septum_frag_key key SEPTUM_ALIGNED = {};
	struct septum_frag_value value = {};
	const struct septum_frag_value *seen;

	if (pkt->frag == SEPTUM_FRAG_NONE)
		return SEPTUM_PARSE_OK;
	septum_frag_key_fill(&key, pkt);
	if (pkt->frag == SEPTUM_FRAG_FIRST) {
		value.sport_be = pkt->sport_be;
		value.dport_be = pkt->dport_be;
		value.protocol = pkt->protocol;
		bpf_map_update_elem(&sep_frags, &key, &value, BPF_ANY);
		return SEPTUM_PARSE_OK;
	}
	seen = bpf_map_lookup_elem(&sep_frags, &key);
	if (!seen)
		return SEPTUM_DROP_FRAG_NOT_FOUND;
	pkt->protocol = seen->protocol;
	pkt->sport_be = seen->sport_be;
	pkt->dport_be = seen->dport_be;
	pkt->policy_port_be = seen->dport_be;
	return SEPTUM_PARSE_OK;
}

#endif
