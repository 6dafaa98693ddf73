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

/* tc verdicts (TC_ACT_OK = TCX_PASS, TC_ACT_SHOT = TCX_DROP: valid for both
 * clsact filters and tcx links). */
#define SEPTUM_TC_FORWARD TC_ACT_OK
#define SEPTUM_TC_DROP TC_ACT_SHOT

/* Parser outcomes that are not drop reasons; drop reasons are all >= 132. */
#define SEPTUM_PARSE_OK 0
#define SEPTUM_PARSE_BYPASS 1 /* ARP, on-link IPv6 neighbour discovery/MLD: never policed */

#define SEPTUM_NSEC_PER_SEC 1000000000ULL
#define SEPTUM_NSEC_PER_MSEC 1000000ULL

/* ICMP types Septum looks at (linux/icmp.h drags in libc socket headers). */
#define SEPTUM_ICMP_ECHOREPLY 0
#define SEPTUM_ICMP_ECHO 8
#define SEPTUM_ICMPV6_ECHO_REQUEST 128
#define SEPTUM_ICMPV6_ECHO_REPLY 129

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

static __always_inline __u8 septum_opposite(__u8 direction)
{
	return direction == SEPTUM_DIR_INGRESS ? SEPTUM_DIR_EGRESS : SEPTUM_DIR_INGRESS;
}

#endif
