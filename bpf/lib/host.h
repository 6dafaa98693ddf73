/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The host firewall (Cilium's host endpoint, bpf_host): which packets on a node
 * interface are the node's own.  Only those are decided, by the host endpoint's
 * policy through the same pipeline as a pod's; everything else on the interface
 * (pod traffic routed through the node, decided at the pods' veths already) passes
 * untouched.
 */
#ifndef SEPTUM_LIB_HOST_H
#define SEPTUM_LIB_HOST_H

#include <stddef.h>

#include "common.h"
#include "endpoint.h"
#include "ipcache.h"

/* The address that makes a packet the node's: the destination of one arriving
 * (host ingress), the source of one leaving (host egress).  Read straight from
 * the linear data when the headers are there (every forwarded packet on
 * ingress), else with bpf_skb_load_bytes: this check runs on every packet of
 * the interface and must not pull a GSO skb's headers for traffic it passes. */
static __always_inline int septum_host_address(struct __sk_buff *skb, __u8 direction,
					       __u8 *addr, __u8 *ip_version)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	__u32 offset;
	__be16 proto;

	if ((void *)(eth + 1) <= data_end)
		proto = eth->h_proto;
	else if (bpf_skb_load_bytes(skb, offsetof(struct ethhdr, h_proto), &proto, sizeof(proto)))
		return 0;
	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);

		*ip_version = SEPTUM_IP_V4;
		if ((void *)(ip + 1) <= data_end) {
			*(__u32 *)addr = direction == SEPTUM_DIR_INGRESS ? ip->daddr : ip->saddr;
			return 1;
		}
		offset = ETH_HLEN + (direction == SEPTUM_DIR_INGRESS ? offsetof(struct iphdr, daddr)
								      : offsetof(struct iphdr, saddr));
		return !bpf_skb_load_bytes(skb, offset, addr, 4);
	}
	if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		*ip_version = SEPTUM_IP_V6;
		if ((void *)(ip6 + 1) <= data_end) {
			septum_copy16(addr, direction == SEPTUM_DIR_INGRESS ? (__u8 *)&ip6->daddr
									     : (__u8 *)&ip6->saddr);
			return 1;
		}
		offset = ETH_HLEN + (direction == SEPTUM_DIR_INGRESS ? offsetof(struct ipv6hdr, daddr)
								      : offsetof(struct ipv6hdr, saddr));
		return !bpf_skb_load_bytes(skb, offset, addr, 16);
	}
	return 0; /* ARP and other non-IP frames are never the host endpoint's to decide */
}

/* 1 when the interface carries a host endpoint (user space wrote an entry for
 * it) and the packet is the node's own: its address is one the ipcache maps to
 * the reserved `host` identity, as Cilium identifies the host's addresses.  A
 * frame too short to hold the address is not the node's (the stack drops it);
 * nothing here drops.
 *
 * A global (not inlined) function: its keys live in its own stack frame, which
 * is gone before the entry program calls septum_full_path (inlined, the entry
 * program's frame plus the full path's passed the verifier's 512 bytes). */
__attribute__((noinline)) int septum_host_packet(struct __sk_buff *skb, __u32 direction)
{
	__u8 addr[16] SEPTUM_ALIGNED = {};
	__u8 ip_version = SEPTUM_IP_NONE;

	if (!septum_endpoint_lookup(skb->ifindex))
		return 0; /* programs attached, host firewall off on this interface */
	if (!septum_host_address(skb, direction, addr, &ip_version))
		return 0;
	return septum_ipcache_identity(addr, ip_version) == SEPTUM_IDENTITY_HOST;
}

#endif
