/* SPDX-License-Identifier: Apache-2.0 */
/* The addresses of this node's pods, for local delivery (lib/localdelivery.h). */
#ifndef SEPTUM_LIB_LOCALADDRS_H
#define SEPTUM_LIB_LOCALADDRS_H

#include "common.h"

/* Written by: the agent, with every pod it adds or removes (its addresses and
 * its host veth's Ethernet address).  Read by: the full path of a new
 * connection at a pod's egress (is its destination a pod of this node at all?
 * a miss costs one hash lookup, on a key whose address the parser just read),
 * and septum_local_route for every packet it delivers. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct septum_host_key);
	__type(value, struct septum_local_addr);
	__uint(max_entries, 2048);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} sep_local_addrs SEC(".maps");

/* Whether `addr` (16-byte aligned, as the parser writes addresses) is a pod
 * of this node. */
static __always_inline int septum_is_local_addr(const __u8 *addr, __u8 ip_version)
{
	struct septum_host_key key SEPTUM_ALIGNED = { .family = ip_version };

	septum_copy16_4(key.addr, addr); /* addr sits at offset 4 */
	return bpf_map_lookup_elem(&sep_local_addrs, &key) != NULL;
}

#endif
