/* SPDX-License-Identifier: Apache-2.0 */
/*
 * L7 redirect: connections whose policy entry carries an L7 proxy port go to
 * the node's transparent proxy, their original destination untouched.
 *
 * Client side (the pod's egress, seen on the host veth's tc ingress): the
 * packet is assigned to the proxy's socket (bpf_sk_assign) and marked
 * TO_PROXY, which policy routing delivers locally; the proxy's accepted
 * socket then has the original destination as its local address.
 *
 * Server side (the pod's ingress, seen on the host veth's tc egress, where
 * bpf_sk_assign is refused): the proxy socket is looked up there, so a
 * missing proxy is reported with the packet's full context, then the packet
 * is hairpinned to the same veth's ingress (bpf_redirect BPF_F_INGRESS) with
 * the port in its mark, and septum_from_pod assigns it (as Cilium's
 * ctx_redirect_to_proxy_hairpin does).  Its destination MAC becomes the host
 * veth's own (the source MAC of a frame the node routed out of that veth),
 * or the stack would take it for someone else's frame.
 *
 * No proxy socket: the connection fails closed, dropped with
 * SEPTUM_DROP_PROXY_LOOKUP_FAILED (Hubble's SOCKET_LOOKUP_FAILED, 178).
 */
#ifndef SEPTUM_LIB_PROXY_H
#define SEPTUM_LIB_PROXY_H

#include "common.h"

#define SEPTUM_BPF_TCP_LISTEN 10 /* enum bpf_tcp_state's BPF_TCP_LISTEN */

/* The full path's answer for an allowed packet the proxy takes:
 * SEPTUM_PROXY_PENDING | proxy port (above every tc verdict). */
#define SEPTUM_PROXY_PENDING 0x10000


/* All ones when x is 0, else 0, without a branch: every branch on the full
 * path forks the verifier's walk of everything after it. */
static __always_inline __u32 septum_zero_mask(__u32 x)
{
	return ((x | -x) >> 31) - 1;
}

/* The original source identity of a proxy's upstream packet, 0 for any other
 * mark (FROM_PROXY_INGRESS 0xA00 and FROM_PROXY_EGRESS 0xB00 differ in bit 8
 * only). */
static __always_inline __u32 septum_proxy_mark_identity(__u32 mark)
{
	__u32 id = (mark >> 16) | ((mark & 0xff) << 16);

	return id & septum_zero_mask((mark & 0x0E00) ^ SEPTUM_MARK_FROM_PROXY_INGRESS);
}

/* A connection allowed with an L7 port goes to the proxy only from a pod's
 * hooks (the host endpoint's never redirect: as in Cilium, host policies have
 * no L7 rules), and never when it is the ingress proxy's own upstream.  Asked
 * only after the full path allowed the packet: a branch there would fork the
 * verifier's walk of everything after it.  Anything but TCP and UDP fails
 * closed in septum_proxy_read (L7 rules sit on TCP/UDP ports only). */
static __always_inline int septum_proxy_may_redirect(__u32 trace_point, __u32 mark)
{
	return (trace_point == SEPTUM_TRACE_FROM_ENDPOINT ||
		trace_point == SEPTUM_TRACE_TO_ENDPOINT) &&
	       (mark & SEPTUM_MARK_MAGIC_MASK) != SEPTUM_MARK_FROM_PROXY_INGRESS;
}

/* What the full path returns for an allowed packet: SEPTUM_TC_FORWARD (0), or
 * SEPTUM_PROXY_PENDING | port when `port` is not 0, without a branch. */
static __always_inline int septum_proxy_pending(__u16 port)
{
	return (((__u32)port + 0xffff) & SEPTUM_PROXY_PENDING) | port;
}

/* What septum_proxy_assign is asked, in one scalar (BPF calls take five
 * arguments): the proxy port, the L4 protocol, the family, assign or look. */
#define SEPTUM_PROXY_Q_IPV6 0x1
#define SEPTUM_PROXY_Q_ASSIGN 0x2
#define SEPTUM_PROXY_QUERY(port, protocol, ipv6, assign)                                      \
	(((__u32)(port) << 16) | ((__u32)(protocol) << 8) | ((ipv6) ? SEPTUM_PROXY_Q_IPV6 : 0) |  \
	 ((assign) ? SEPTUM_PROXY_Q_ASSIGN : 0))

/* Finds the proxy socket for the packet `tuple` (its own direction) and, when
 * asked to, assigns the packet to it.  A packet of a connection the proxy has
 * accepted goes to that socket; any other to the listener on loopback at
 * `port`.  For UDP only the listener is asked: a 4-tuple lookup could find a
 * node socket bound to the original port (a DNS server of the node's own).
 * Returns 0 or the drop reason.  A global function, so the verifier checks
 * its socket references once, on their own. */
static __always_inline int septum_proxy_assign(struct __sk_buff *skb,
						  struct bpf_sock_tuple *tuple, __u32 query)
{
	__u32 ipv6 = query & SEPTUM_PROXY_Q_IPV6;
	__u32 protocol = (query >> 8) & 0xff;
	__u16 port = query >> 16;
	__u32 len = ipv6 ? sizeof(tuple->ipv6) : sizeof(tuple->ipv4);
	struct bpf_sock *sk = NULL;
	long err;

	if (!skb || !tuple)
		return SEPTUM_DROP_PROXY_LOOKUP_FAILED;
	if (protocol == IPPROTO_TCP) {
		sk = bpf_skc_lookup_tcp(skb, tuple, len, BPF_F_CURRENT_NETNS, 0);
		if (sk && sk->state == SEPTUM_BPF_TCP_LISTEN) {
			/* a node listener on the original port, not the proxy */
			bpf_sk_release(sk);
			sk = NULL;
		}
	}
	/* The listener's key in the caller's tuple: no stack of our own (the
	 * full path's frame and this one share 512 bytes). */
	__builtin_memset(tuple, 0, sizeof(*tuple));
	if (ipv6) {
		tuple->ipv6.daddr[3] = bpf_htonl(1);
		tuple->ipv6.dport = bpf_htons(port);
	} else {
		tuple->ipv4.daddr = bpf_htonl(0x7f000001);
		tuple->ipv4.dport = bpf_htons(port);
	}
	if (protocol == IPPROTO_TCP) {
		if (!sk) {
			sk = bpf_skc_lookup_tcp(skb, tuple, len, BPF_F_CURRENT_NETNS, 0);
			if (sk && sk->state != SEPTUM_BPF_TCP_LISTEN) {
				bpf_sk_release(sk);
				sk = NULL;
			}
		}
	} else if (protocol == IPPROTO_UDP) {
		sk = bpf_sk_lookup_udp(skb, tuple, len, BPF_F_CURRENT_NETNS, 0);
	}
	if (!sk)
		return SEPTUM_DROP_PROXY_LOOKUP_FAILED;
	err = (query & SEPTUM_PROXY_Q_ASSIGN) ? bpf_sk_assign(skb, sk, 0) : 0;
	bpf_sk_release(sk);
	return err ? SEPTUM_DROP_PROXY_ASSIGN_FAILED : 0;
}

/* The packet's tuple from the parsed packet (its own direction). */
static __always_inline void septum_proxy_tuple(struct bpf_sock_tuple *tuple,
					       const struct septum_pkt *pkt)
{
	__builtin_memset(tuple, 0, sizeof(*tuple));
	if (pkt->ip_version == SEPTUM_IP_V6) {
		__builtin_memcpy(tuple->ipv6.saddr, pkt->src, 16);
		__builtin_memcpy(tuple->ipv6.daddr, pkt->dst, 16);
		tuple->ipv6.sport = pkt->sport_be;
		tuple->ipv6.dport = pkt->dport_be;
	} else {
		__builtin_memcpy(&tuple->ipv4.saddr, pkt->src, 4);
		__builtin_memcpy(&tuple->ipv4.daddr, pkt->dst, 4);
		tuple->ipv4.sport = pkt->sport_be;
		tuple->ipv4.dport = pkt->dport_be;
	}
}


/* The headers a redirect needs, read again after the full path returned (its
 * parse lives in its own frame): IPv4 (options allowed, not a later fragment)
 * or IPv6 directly followed by TCP or UDP, as the fast path reads them.  The
 * full path parsed and decided this very packet, so these reads cannot fail
 * where it succeeded, except for the forms named here (IPv6 extension headers,
 * fragments), which fail closed.  Returns 0 or a drop reason. */
static __always_inline int septum_proxy_read(struct __sk_buff *skb, struct septum_pkt *pkt)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	__u16 *ports;

	if ((void *)(eth + 1) > data_end)
		return SEPTUM_DROP_PROXY_ASSIGN_FAILED;
	__builtin_memcpy(pkt->src_mac, eth->h_source, ETH_ALEN);
	__builtin_memcpy(pkt->dst_mac, eth->h_dest, ETH_ALEN);
	pkt->len = skb->len;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = data + ETH_HLEN;

		if ((void *)(ip + 1) > data_end || ip->ihl < 5 ||
		    (ip->frag_off & bpf_htons(0x1fff)))
			return SEPTUM_DROP_PROXY_ASSIGN_FAILED;
		ports = (void *)ip + ip->ihl * 4;
		pkt->protocol = ip->protocol;
		pkt->ip_version = SEPTUM_IP_V4;
		__builtin_memcpy(pkt->src, &ip->saddr, 4);
		__builtin_memcpy(pkt->dst, &ip->daddr, 4);
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = data + ETH_HLEN;

		if ((void *)(ip6 + 1) > data_end)
			return SEPTUM_DROP_PROXY_ASSIGN_FAILED;
		ports = (void *)(ip6 + 1);
		pkt->protocol = ip6->nexthdr;
		pkt->ip_version = SEPTUM_IP_V6;
		__builtin_memcpy(pkt->src, &ip6->saddr, 16);
		__builtin_memcpy(pkt->dst, &ip6->daddr, 16);
	} else {
		return SEPTUM_DROP_PROXY_ASSIGN_FAILED;
	}
	if ((pkt->protocol != IPPROTO_TCP && pkt->protocol != IPPROTO_UDP) ||
	    (void *)(ports + 2) > data_end)
		return SEPTUM_DROP_PROXY_ASSIGN_FAILED;
	pkt->sport_be = ports[0];
	pkt->dport_be = ports[1];
	pkt->policy_port_be = ports[1];
	if (pkt->protocol == IPPROTO_TCP && (void *)(ports + 7) <= data_end)
		pkt->tcp_flags = ((__u8 *)ports)[13];
	return 0;
}

/* Gives an allowed packet of an L7-redirected connection to the proxy: on a
 * pod's egress (the veth's tc ingress) assigned at once; on its ingress (tc
 * egress) looked up, then hairpinned to the veth's ingress, where
 * septum_proxy_hairpin_in assigns it (`ifindex`: the hook's host veth).
 * Returns the tc verdict, or 0 with the drop reason in *reason. */
static __always_inline int septum_proxy_send(struct __sk_buff *skb, const struct septum_pkt *pkt,
					     __u32 ifindex, __u8 direction, __u16 port,
					     int *reason)
{
	struct bpf_sock_tuple tuple = {};
	__u64 mac = 0;

	septum_proxy_tuple(&tuple, pkt);
	*reason = septum_proxy_assign(skb, &tuple,
				      SEPTUM_PROXY_QUERY(port, pkt->protocol,
							 pkt->ip_version == SEPTUM_IP_V6,
							 direction == SEPTUM_DIR_EGRESS));
	if (*reason)
		return 0;
	skb->mark = SEPTUM_MARK_TO_PROXY | ((__u32)port << 16);
	if (direction == SEPTUM_DIR_EGRESS)
		return SEPTUM_TC_FORWARD;
	/* The frame was routed out of this veth: its source MAC is the veth's. */
	if (bpf_skb_load_bytes(skb, ETH_ALEN, &mac, ETH_ALEN) ||
	    bpf_skb_store_bytes(skb, 0, &mac, ETH_ALEN, 0)) {
		*reason = SEPTUM_DROP_PROXY_ASSIGN_FAILED;
		return 0;
	}
	/* The hook's veth, which is not the packet's interface when the source pod's
	 * program delivers it (lib/localdelivery.h). */
	return bpf_redirect(ifindex, BPF_F_INGRESS);
}

/* A hairpinned packet arriving on the host veth's tc ingress (mark TO_PROXY):
 * assign it to the proxy.  It was decided, counted and reported on its way
 * towards the pod. */
__attribute__((noinline)) int septum_proxy_hairpin_in(struct __sk_buff *skb)
{
	struct bpf_sock_tuple tuple = {};
	struct septum_pkt pkt = {};
	__u16 port;

	if (!skb)
		return SEPTUM_TC_DROP;
	port = skb->mark >> 16;
	if (septum_proxy_read(skb, &pkt))
		return SEPTUM_TC_DROP;
	septum_proxy_tuple(&tuple, &pkt);
	if (septum_proxy_assign(skb, &tuple,
				SEPTUM_PROXY_QUERY(port, pkt.protocol, pkt.ip_version == SEPTUM_IP_V6,
						   1)))
		return SEPTUM_TC_DROP; /* the proxy went away since the look on the way in */
	return SEPTUM_TC_FORWARD;
}

#endif
