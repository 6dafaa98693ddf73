/* SPDX-License-Identifier: Apache-2.0 */
/* The node-wide CIDR deny list enforced by XDP on the uplink (prefilter). */
#ifndef SEPTUM_LIB_PREFILTER_H
#define SEPTUM_LIB_PREFILTER_H

#include "common.h"

/* Written by: the agent (set the XDP deny list).  Read by: the XDP program,
 * per packet, on the source address. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct septum_lpm_addr_key);
	__type(value, struct septum_prefilter_value);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} sep_prefilter SEC(".maps");

static __always_inline const struct septum_prefilter_value *
septum_prefilter_match(const __u8 *src, __u8 ip_version)
{
	struct septum_lpm_addr_key key SEPTUM_ALIGNED = { .family = ip_version };

	key.prefixlen = SEPTUM_LPM_ADDR_PREFIX_FIXED + (ip_version == SEPTUM_IP_V4 ? 32 : 128);
	septum_copy16(key.addr, src);
	return bpf_map_lookup_elem(&sep_prefilter, &key);
}

#endif
