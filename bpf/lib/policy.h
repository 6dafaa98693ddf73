/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Policy lookup for a new connection.  See struct septum_policy_key in abi.h
 * for the bucket layout.  User space resolves deny-beats-allow while encoding,
 * so here the most specific hit in the peer's bucket decides, and only when
 * that bucket has no answer does the any-peer bucket get asked.
 */
#ifndef SEPTUM_LIB_POLICY_H
#define SEPTUM_LIB_POLICY_H

#include "common.h"

/* Written by: the agent (a whole generation at a time, then the endpoint's
 * generation byte flips; the old generation is deleted afterwards).  Read
 * by: the tc programs, once per new connection. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct septum_policy_key);
	__type(value, struct septum_policy_value);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} sep_policy SEC(".maps");

/* Port ranges.  Written by: the agent, like sep_policy.  Read by: the tc
 * programs, only when a bucket head has SEPTUM_POLICY_F_HAS_RANGE. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct septum_policy_range_key);
	__type(value, struct septum_policy_value);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} sep_policy_rng SEC(".maps");

/* The most specific entry of one bucket, or NULL when the bucket is silent.
 * exact_tried: the caller looked the exact (protocol, port) key up already,
 * and missed. */
static __always_inline const struct septum_policy_value *
septum_policy_bucket(struct septum_policy_key *key, __u8 protocol, __u16 port_be,
		     int exact_tried)
{
	const struct septum_policy_value *head, *hit;

	key->protocol = 0;
	key->dport_be = 0;
	head = bpf_map_lookup_elem(&sep_policy, key);
	if (!head)
		return NULL;
	if ((head->flags & SEPTUM_POLICY_F_HAS_EXACT) && protocol && !exact_tried) {
		key->protocol = protocol;
		key->dport_be = port_be;
		hit = bpf_map_lookup_elem(&sep_policy, key);
		if (hit)
			return hit;
	}
	if (head->flags & SEPTUM_POLICY_F_HAS_RANGE) {
		struct septum_policy_range_key range = {
			.prefixlen = SEPTUM_POLICY_RANGE_PREFIX_FIXED + 16,
			.endpoint_id = key->endpoint_id,
			.generation = key->generation,
			.direction = key->direction,
			.peer_identity = key->peer_identity,
			.protocol = protocol,
			.dport_be = port_be,
		};

		hit = bpf_map_lookup_elem(&sep_policy_rng, &range);
		if (hit)
			return hit;
	}
	if ((head->flags & SEPTUM_POLICY_F_HAS_PROTO) && protocol) {
		key->protocol = protocol;
		key->dport_be = 0;
		hit = bpf_map_lookup_elem(&sep_policy, key);
		if (hit)
			return hit;
	}
	return head->action != SEPTUM_ACTION_NONE ? head : NULL;
}

/* The exact key first when the endpoint says its policy is mostly L3+L4
 * (SEPTUM_EP_POLICY_F_EXACT_FIRST_*): the exact entry is the most specific
 * of its bucket, so a hit decides at once. */
static __always_inline const struct septum_policy_value *
septum_policy_peer(struct septum_policy_key *key, __u8 protocol, __u16 port_be,
		   int exact_first)
{
	const struct septum_policy_value *hit;

	if (exact_first && protocol) {
		key->protocol = protocol;
		key->dport_be = port_be;
		hit = bpf_map_lookup_elem(&sep_policy, key);
		if (hit)
			return hit;
	}
	return septum_policy_bucket(key, protocol, port_be, exact_first && protocol);
}

static __always_inline const struct septum_policy_value *
septum_policy_lookup(const struct septum_endpoint *ep, __u8 direction, __u32 peer_identity,
		     __u8 protocol, __u16 port_be)
{
	struct septum_policy_key key = {
		.endpoint_id = ep->endpoint_id,
		.generation = ep->policy_generation,
		.direction = direction,
		.peer_identity = peer_identity,
	};
	const struct septum_policy_value *hit;
	__u8 any_peer = direction == SEPTUM_DIR_INGRESS ? SEPTUM_EP_F_ANY_PEER_INGRESS
							: SEPTUM_EP_F_ANY_PEER_EGRESS;
	__u8 exact_first = direction == SEPTUM_DIR_INGRESS
				   ? SEPTUM_EP_POLICY_F_EXACT_FIRST_INGRESS
				   : SEPTUM_EP_POLICY_F_EXACT_FIRST_EGRESS;

	hit = septum_policy_peer(&key, protocol, port_be, ep->policy_flags & exact_first);
	if (hit || !(ep->flags & any_peer))
		return hit;
	key.peer_identity = SEPTUM_IDENTITY_UNKNOWN; /* the any-peer bucket */
	return septum_policy_peer(&key, protocol, port_be, ep->policy_flags & exact_first);
}

static __always_inline int septum_direction_enforced(const struct septum_endpoint *ep,
						     __u8 direction)
{
	__u8 flag = direction == SEPTUM_DIR_INGRESS ? SEPTUM_EP_F_ENFORCE_INGRESS
						    : SEPTUM_EP_F_ENFORCE_EGRESS;
	return ep->flags & flag;
}

#endif
