/* SPDX-License-Identifier: Apache-2.0 */
/* ipcache: peer address -> security identity (unknown = world). */
#ifndef SEPTUM_LIB_IPCACHE_H
#define SEPTUM_LIB_IPCACHE_H

#include "common.h"
#include "parse.h"

/* Exact host addresses (/32 and /128).  Written by: the agent (ipcache
 * upserts/removals).  Read by: the tc programs for new connections and drops,
 * the XDP program for drop reports. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct septum_host_key);
	__type(value, struct septum_ipcache_value);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} sep_ipcache_h SEC(".maps");

/* CIDR prefixes (shorter than a host).  Written by: the agent.  Read by: as
 * above, after a miss in sep_ipcache_h. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct septum_lpm_addr_key);
	__type(value, struct septum_ipcache_value);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} sep_ipcache SEC(".maps");

static __always_inline __u32 septum_ipcache_identity(const __u8 *addr, __u8 ip_version)
{
	struct septum_host_key host SEPTUM_ALIGNED = { .family = ip_version };
	struct septum_lpm_addr_key cidr SEPTUM_ALIGNED = { .family = ip_version };
	const struct septum_ipcache_value *value;

	septum_copy16_4(host.addr, addr); /* addr sits at offset 4 */
	value = bpf_map_lookup_elem(&sep_ipcache_h, &host);
	if (value)
		return value->identity;
	cidr.prefixlen = SEPTUM_LPM_ADDR_PREFIX_FIXED + (ip_version == SEPTUM_IP_V4 ? 32 : 128);
	septum_copy16(cidr.addr, addr);
	value = bpf_map_lookup_elem(&sep_ipcache, &cidr);
	return value ? value->identity : SEPTUM_IDENTITY_WORLD;
}

/* The identity of the packet's other end (its source when it travels
 * towards the pod); 0 for a packet with no IP header. */
static __always_inline __u32 septum_peer_identity(const struct septum_pkt *pkt,
						  __u8 packet_direction)
{
	if (pkt->ip_version == SEPTUM_IP_NONE)
		return 0;
	return septum_ipcache_identity(packet_direction == SEPTUM_DIR_INGRESS ? pkt->src : pkt->dst,
				       pkt->ip_version);
}

#endif
