/* SPDX-License-Identifier: Apache-2.0 */
/* Includes, named return codes and small helpers every other header uses. */
#ifndef SEPTUM_LIB_COMMON_H
#define SEPTUM_LIB_COMMON_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include <septum/abi.h>

/* What each stage of an endpoint hook (fast path, related ICMP error, full
 * path) returns: a tc verdict that finishes the packet, or SEPTUM_CONTINUE
 * when the stage did not decide it and the next stage takes it over (as
 * Cilium's conntrack names its outcomes CT_NEW, CT_ESTABLISHED, ...).
 * TC_ACT_OK = TCX_PASS and TC_ACT_SHOT = TCX_DROP: valid for both clsact
 * filters and tcx links. */
enum septum_outcome {
	SEPTUM_CONTINUE = -1, /* not decided here: never returned to the kernel */
	/* Allowed, and the connection may skip the node's stack (lib/localdelivery.h):
	 * answered only to a hook with SEPTUM_HOOK_F_DELIVERY_SOURCE, never returned to
	 * the kernel.  LOCAL: an established connection delivered locally before;
	 * NEW: a connection this very packet opened. */
	SEPTUM_FORWARD_LOCAL = -2,
	SEPTUM_FORWARD_NEW = -3,
	SEPTUM_TC_FORWARD = TC_ACT_OK,
	SEPTUM_TC_DROP = TC_ACT_SHOT,
};

/* Bits of septum_hook.flags: the hook's part in local delivery. */
#define SEPTUM_HOOK_F_DELIVERY_SOURCE 0x01 /* a pod's egress: may answer FORWARD_LOCAL/NEW */
#define SEPTUM_HOOK_F_DELIVERY_TARGET 0x02 /* the destination's hook run by the source's
					    * program: its new entries are SEPTUM_CT_F_LOCAL */

/* Where an endpoint program runs: what every event it reports carries. */
struct septum_hook {
	__u32 ifindex;
	__u8 direction;   /* enum septum_direction of packets seen here */
	__u8 trace_point; /* enum septum_trace_point */
	__u8 flags;       /* SEPTUM_HOOK_F_* */
};

/* Parser outcomes that are not drop reasons; drop reasons are all >= 132. */
#define SEPTUM_PARSE_OK 0
#define SEPTUM_PARSE_BYPASS 1 /* ARP, on-link IPv6 neighbour discovery/MLD: never policed */

#define SEPTUM_NSEC_PER_SEC 1000000000ULL
#define SEPTUM_NSEC_PER_MSEC 1000000ULL

/* ICMP types Septum looks at (linux/icmp.h drags in libc socket headers). */
#define SEPTUM_ICMP_ECHOREPLY 0
#define SEPTUM_ICMP_DEST_UNREACH 3
#define SEPTUM_ICMP_ECHO 8
#define SEPTUM_ICMP_TIME_EXCEEDED 11
#define SEPTUM_ICMP_PARAMETER_PROBLEM 12
#define SEPTUM_ICMPV6_DEST_UNREACH 1
#define SEPTUM_ICMPV6_PARAMETER_PROBLEM 4 /* the last error type (2, 3: too big, time) */
#define SEPTUM_ICMPV6_ECHO_REQUEST 128
#define SEPTUM_ICMPV6_ECHO_REPLY 129
#define SEPTUM_ICMPV6_MLD_QUERY 130
#define SEPTUM_ICMPV6_MLD_DONE 132 /* 131: MLD report */
#define SEPTUM_ICMPV6_ND_ROUTER_SOLICIT 133
#define SEPTUM_ICMPV6_ND_REDIRECT 137 /* 134-136: advertisements, neighbour solicit */
#define SEPTUM_ICMPV6_MLD2_REPORT 143

#ifndef IPPROTO_SCTP
#define IPPROTO_SCTP 132
#endif

/* Stack structs whose 16-byte address fields are copied with septum_copy16
 * are declared SEPTUM_ALIGNED: the verifier insists on aligned stack access. */
#define SEPTUM_ALIGNED __attribute__((aligned(8)))

/* 16-byte copy between 8-byte aligned buffers (SEPTUM_ALIGNED stack structs,
 * ring-buffer records): two 8-byte moves instead of sixteen byte moves, on
 * the path of every packet. */
static __always_inline void septum_copy16(__u8 *dst, const __u8 *src)
{
	((__u64 *)dst)[0] = ((const __u64 *)src)[0];
	((__u64 *)dst)[1] = ((const __u64 *)src)[1];
}

/* The same between 4-byte aligned buffers. */
static __always_inline void septum_copy16_4(__u8 *dst, const __u8 *src)
{
	/* Hide src's alignment from clang: knowing it 8-aligned, it would form
	 * src + 4 as src | 4, which the verifier refuses on a pointer. */
	asm volatile("" : "+r"(src));
	((__u32 *)dst)[0] = ((const __u32 *)src)[0];
	((__u32 *)dst)[1] = ((const __u32 *)src)[1];
	((__u32 *)dst)[2] = ((const __u32 *)src)[2];
	((__u32 *)dst)[3] = ((const __u32 *)src)[3];
}

/* From packet data, whose alignment nobody promises. */
static __always_inline void septum_copy16_unaligned(__u8 *dst, const __u8 *src)
{
	__builtin_memcpy(dst, src, 16);
}

static __always_inline int septum_addr_equal16(const __u8 *a, const __u8 *b)
{
	const __u64 *x = (const __u64 *)a;
	const __u64 *y = (const __u64 *)b;

	return x[0] == y[0] && x[1] == y[1];
}

/* fe80::/10: the first 10 bits of the address. */
static __always_inline int septum_ipv6_is_link_local(const __u8 *addr)
{
	return addr[0] == 0xfe && (addr[1] & 0xc0) == 0x80;
}

static __always_inline __u8 septum_opposite(__u8 direction)
{
	return direction == SEPTUM_DIR_INGRESS ? SEPTUM_DIR_EGRESS : SEPTUM_DIR_INGRESS;
}

#endif
