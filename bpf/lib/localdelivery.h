/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Local delivery: a connection between two pods of this node skips the
 * node's IP stack (what Cilium calls BPF host routing).  The source pod's
 * program (septum_from_pod) decides its packet as always, then looks the
 * destination up in the node's FIB; when the route leads to another pod's
 * host veth it rewrites the Ethernet addresses and the TTL as forwarding
 * would, runs the destination's hook (its conntrack scope, fast path,
 * policy and events: everything septum_to_pod would have done) and hands
 * the packet straight to the destination pod's interface (bpf_redirect_peer).
 * A connection costs four program runs instead of eight, and no packet of it
 * crosses routing, netfilter, the neighbour layer or a backlog queue.
 *
 * A connection goes one way or the other from its first packet on, both
 * ways: the source's and the destination's conntrack entries carry
 * SEPTUM_CT_F_LOCAL once that packet was delivered here.  A connection that
 * reached a pod through the node's stack keeps using it, replies included,
 * so whatever the stack translated (kube-proxy's DNAT of a ClusterIP, a
 * hostPort) is translated back.  Nothing of a local connection falls back
 * to the stack: netfilter would call it INVALID, having never seen the
 * connection start.  A neighbour the node lost is resolved by
 * bpf_redirect_neigh out of the destination's veth (SEPTUM_MARK_DELIVERED:
 * septum_to_pod does not decide it again); a new connection to a pod the
 * node has not resolved yet goes through the stack whole; an ICMP error about a local
 * connection follows it (lib/icmp_related.h); a destination entry that
 * predates the source's adopts the mark (fastpath.h, verdict.h).  Left to
 * the stack, which forwards nothing of them or sees them whole: a TTL about
 * to run out, a packet over the route's MTU, fragments, ICMP echo and other
 * protocols as a connection's first packet, a route to anything but the
 * pod's veth, a pod's packets to its own address, the L7 proxies' sockets.
 * Like Cilium's, this bypasses the node's iptables FORWARD chain for
 * pod-to-pod traffic; SEPTUM_CFG_F_LOCAL_DELIVERY off (chart value
 * bpf.hostLegacyRouting) restores the stack.
 */
#ifndef SEPTUM_LIB_LOCALDELIVERY_H
#define SEPTUM_LIB_LOCALDELIVERY_H

#include "common.h"
#include "config.h"
#include "conntrack.h"
#include "fastpath.h"
#include "localaddrs.h"
#include "verdict.h"

#define SEPTUM_AF_INET 2
#define SEPTUM_AF_INET6 10

/* septum_local_route's answer: the destination's host veth, and whether the
 * node has not resolved the destination pod's Ethernet address yet. */
#define SEPTUM_LOCAL_NO_NEIGH (1U << 31)

/* The destination pod's host veth for the packet (| SEPTUM_LOCAL_NO_NEIGH),
 * its Ethernet addresses and TTL rewritten as the node's forwarding would;
 * 0 (packet untouched) when the stack must take it.  `is_new`: the packet
 * opened its connection just now, whose source entry is marked local here,
 * once delivery is certain. */
static __attribute__((noinline)) __u32 septum_local_route(struct __sk_buff *skb, __u32 is_new)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct septum_host_key key SEPTUM_ALIGNED = {};
	struct bpf_fib_lookup fib = {};
	const struct septum_local_addr *local;
	struct septum_ct_lookup ct;
	__u8 protocol = 0, tcp_flags = 0;
	__u32 ifindex = skb->ifindex;
	__u32 no_neigh = 0;
	__be16 proto;
	__u8 ttl;
	int found;
	long rc;

	if (data + ETH_HLEN > data_end)
		return 0;
	proto = *(__be16 *)(data + offsetof(struct ethhdr, h_proto));
	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = data + ETH_HLEN;

		if ((void *)(ip + 1) > data_end || (ip->frag_off & bpf_htons(SEPTUM_IPV4_FRAG_BITS)))
			return 0;
		ttl = ip->ttl;
		key.family = SEPTUM_IP_V4;
		*(__u32 *)key.addr = ip->daddr;
		fib.family = SEPTUM_AF_INET;
		fib.tos = ip->tos;
		fib.l4_protocol = ip->protocol;
		fib.tot_len = bpf_ntohs(ip->tot_len);
		fib.ipv4_src = ip->saddr;
		fib.ipv4_dst = ip->daddr;
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = data + ETH_HLEN;

		/* Only TCP, UDP and ICMPv6 right after the header: a fragment
		 * header may sit behind any other extension header. */
		if ((void *)(ip6 + 1) > data_end ||
		    (ip6->nexthdr != IPPROTO_TCP && ip6->nexthdr != IPPROTO_UDP &&
		     ip6->nexthdr != IPPROTO_ICMPV6))
			return 0;
		ttl = ip6->hop_limit;
		key.family = SEPTUM_IP_V6;
		__builtin_memcpy(key.addr, &ip6->daddr, 16);
		fib.family = SEPTUM_AF_INET6;
		fib.flowinfo = *(__be32 *)ip6 & bpf_htonl(0x0fffffff);
		fib.l4_protocol = ip6->nexthdr;
		fib.tot_len = bpf_ntohs(ip6->payload_len) + sizeof(*ip6);
		__builtin_memcpy(fib.ipv6_src, &ip6->saddr, 16);
		__builtin_memcpy(fib.ipv6_dst, &ip6->daddr, 16);
	} else {
		return 0;
	}
	if (ttl <= 1)
		return 0; /* the stack answers with Time Exceeded (nothing is forwarded) */
	local = bpf_map_lookup_elem(&sep_local_addrs, &key);
	if (!local || local->ifindex == ifindex)
		return 0;
	fib.ifindex = ifindex;
	/* A GSO packet (a TCP sender's segments in one skb) is longer than the
	 * MTU and fits it segment by segment, as forwarding checks it: its length
	 * is left out of the lookup's MTU check, or a bulk transfer's data would
	 * take the stack while its handshake did not. */
	if (skb->gso_size)
		fib.tot_len = 0;
	/* The node's routes and rules decide, as they would have: a pod whose
	 * address is routed elsewhere is not delivered here. */
	rc = bpf_fib_lookup(skb, &fib, sizeof(fib), 0);
	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH) {
		/* The node has not resolved the pod (yet, or any more: delivered
		 * traffic never refreshes its entry).  A new connection goes to
		 * the stack whole, which resolves it; one delivered here already
		 * stays so: bpf_redirect_neigh resolves it and writes the frame's
		 * addresses (the source one is written here too: the destination's
		 * L7 hairpin reads it, lib/proxy.h).  The lookup named the veth. */
		if (is_new)
			return 0;
		__builtin_memcpy(fib.smac, local->mac, ETH_ALEN);
		no_neigh = SEPTUM_LOCAL_NO_NEIGH;
	} else if (rc != BPF_FIB_LKUP_RET_SUCCESS) {
		return 0;
	}
	if (fib.ifindex != local->ifindex)
		return 0;
	if (is_new) {
		/* The source's entry, just inserted by the full path (the fast
		 * path's key: TCP or UDP, no IPv4 options or IPv6 extension). */
		ct.done = 0;
		if (proto == bpf_htons(ETH_P_IP))
			found = septum_fast_lookup4(data, data_end, skb->len, ifindex, &ct, &protocol,
						    &tcp_flags);
		else
			found = septum_fast_lookup6(data, data_end, skb->len, ifindex, &ct, &protocol,
						    &tcp_flags);
		if (!found || !ct.entry)
			return 0;
	}
	if ((!no_neigh && bpf_skb_store_bytes(skb, 0, fib.dmac, ETH_ALEN, 0)) ||
	    bpf_skb_store_bytes(skb, ETH_ALEN, fib.smac, ETH_ALEN, 0))
		return 0;
	ttl -= 1;
	if (proto == bpf_htons(ETH_P_IP)) {
		if (bpf_l3_csum_replace(skb, ETH_HLEN + offsetof(struct iphdr, check),
					bpf_htons((__u16)(ttl + 1) << 8), bpf_htons((__u16)ttl << 8),
					2) ||
		    bpf_skb_store_bytes(skb, ETH_HLEN + offsetof(struct iphdr, ttl), &ttl, 1, 0))
			return 0;
	} else if (bpf_skb_store_bytes(skb, ETH_HLEN + offsetof(struct ipv6hdr, hop_limit), &ttl,
				       1, 0)) {
		return 0;
	}
	/* Marked only now: a connection is local once its first packet surely is. */
	if (is_new)
		ct.entry->flags |= SEPTUM_CT_F_LOCAL;
	return fib.ifindex | no_neigh;
}

/* A packet its source's hook allowed (SEPTUM_FORWARD_LOCAL or _NEW): the
 * destination's hook decides it too, then it goes to the destination pod; or,
 * when septum_local_route says so, to the node's stack as before.  Inlined
 * into septum_from_pod: the full path's frame under a frame of its own here
 * would pass the 512 bytes of stack a call chain may use. */
static __always_inline int septum_local_deliver(struct __sk_buff *skb, __u32 is_new)
{
	struct septum_hook target = {
		.direction = SEPTUM_DIR_INGRESS,
		.trace_point = SEPTUM_TRACE_TO_ENDPOINT,
		.flags = SEPTUM_HOOK_F_DELIVERY_TARGET,
	};
	__u32 route;
	int ret;

	if (!(septum_config_get()->flags & SEPTUM_CFG_F_LOCAL_DELIVERY))
		return SEPTUM_TC_FORWARD;
	route = septum_local_route(skb, is_new);
	if (!route)
		return SEPTUM_TC_FORWARD;
	target.ifindex = route & ~SEPTUM_LOCAL_NO_NEIGH;
	ret = septum_handle_endpoint(skb, &target);
	if (ret != SEPTUM_TC_FORWARD)
		return ret; /* dropped, or hairpinned to the destination's L7 proxy */
	if (!(route & SEPTUM_LOCAL_NO_NEIGH))
		return bpf_redirect_peer(target.ifindex, 0);
	/* Out of the destination's host veth, which resolves the neighbour: its
	 * septum_to_pod lets the packet pass, decided already (the mark stays in
	 * the node's namespace: a veth clears it on the way into the pod's). */
	skb->mark = SEPTUM_MARK_DELIVERED;
	return bpf_redirect_neigh(target.ifindex, NULL, 0, 0);
}

#endif
