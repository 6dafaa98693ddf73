/* SPDX-License-Identifier: Apache-2.0 */
/* Local endpoints (pods), found by the ifindex of their host-side veth. */
#ifndef SEPTUM_LIB_ENDPOINT_H
#define SEPTUM_LIB_ENDPOINT_H

#include "common.h"

/* Written by: the agent (upsert/remove endpoint, every policy change: the
 * whole value is replaced at once).  Read by: the tc programs, per packet.
 * Not preallocated so that a replaced element is freed only after an RCU
 * grace period: a program that looked up the old value keeps reading a
 * consistent old value. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct septum_endpoint_key);
	__type(value, struct septum_endpoint);
	__uint(max_entries, 1024);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} sep_endpoints SEC(".maps");

static __always_inline const struct septum_endpoint *septum_endpoint_lookup(__u32 ifindex)
{
	struct septum_endpoint_key key = { .ifindex = ifindex };

	return bpf_map_lookup_elem(&sep_endpoints, &key);
}

/* Anti-spoofing for packets the pod sends: the source must be one of the pod's
 * addresses (IPv6 link-local sources are the pod's own too). */
static __always_inline int septum_endpoint_owns_source(const struct septum_endpoint *ep,
						       const __u8 *src, __u8 ip_version)
{
	if (ip_version == SEPTUM_IP_V4)
		return (ep->flags & SEPTUM_EP_F_HAS_IPV4) &&
		       *(const __u32 *)src == *(const __u32 *)ep->ipv4;
	if (septum_ipv6_is_link_local(src))
		return 1;
	return (ep->flags & SEPTUM_EP_F_HAS_IPV6) && septum_addr_equal16(src, ep->ipv6);
}

#endif
