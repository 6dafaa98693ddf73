/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Flow events to the ring buffer, the lost-event counter and the per-flow
 * drop-event rate limit.  Aggregation rule (docs/datapath.md): an event on
 * every new connection (its policy verdict), on the first SYN, FIN or RST of a
 * direction of a connection (so SYN, SYN-ACK, FIN and RST: handshake and
 * close; as Cilium's default monitor aggregation flags), on the first reply of
 * a non-TCP flow, and on drops, at most one drop event per flow and reason per
 * drop_event_interval_ms, carrying the count of the drops it suppressed.
 */
#ifndef SEPTUM_LIB_EVENTS_H
#define SEPTUM_LIB_EVENTS_H

#include "common.h"
#include "parse.h"

/* The TCP flags whose first sight in a direction is reported.  Not ACK or
 * PSH: the handshake's last ACK and the first data would add two events to
 * every connection (one per pod's interface) that say nothing the SYN-ACK
 * did not, and each costs the agent's ingest ~1-2 us (docs/benchmarks.md,
 * "Per TCP connection"). */
#define SEPTUM_EVENT_TCP_FLAGS (SEPTUM_TCP_SYN | SEPTUM_TCP_FIN | SEPTUM_TCP_RST)

/* Written by: every program (bpf_ringbuf_reserve/submit).  Read by: the
 * agent's flow reader (mmap of the ring, woken through epoll). */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 22);
} sep_events SEC(".maps");

/* Written by: every program, when a reservation fails (ring full).  Read by:
 * the agent, reported as lost events. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 1);
} sep_lost SEC(".maps");

/* Written and read by: the tc and XDP programs (drop-event rate limit). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct septum_drop_key);
	__type(value, struct septum_drop_value);
	__uint(max_entries, 16384);
} sep_drop_rl SEC(".maps");

/* This CPU's last drop-rate-limit decision: while the same flow keeps
 * dropping within its interval on this CPU, its suppressed drops are counted
 * here (a per-CPU slot, no shared-map lookup) and folded into sep_drop_rl the
 * next time this CPU goes there (interval over, or another flow).  Written
 * and read by: the tc and XDP programs. */
struct septum_drop_cache {
	struct septum_drop_key key;
	__u64 last_event;
	__u32 suppressed; /* counted here, not yet in sep_drop_rl */
	__u32 valid;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct septum_drop_cache);
	__uint(max_entries, 1);
} sep_drop_cache SEC(".maps");

/* Everything of an event that does not come from the packet itself. */
struct septum_report {
	__u64 bytes;
	__u32 src_identity;
	__u32 dst_identity;
	__u32 rule_id;
	__u32 ifindex;
	__u32 packets;
	__u32 suppressed;
	__u16 endpoint_id;
	__u16 drop_reason;
	__u16 l7_proxy_port;
	__u8 event_type;
	__u8 verdict;
	__u8 direction;
	__u8 is_reply;
	__u8 match_type;
	__u8 flags;
	__u8 trace_point;
};

/* Source and destination identity: the endpoint's own and its peer's, in the
 * order the packet travels. */
static __always_inline void septum_identities(struct septum_report *report,
					      const struct septum_endpoint *ep,
					      __u8 packet_direction, __u32 peer_identity)
{
	__u32 local = ep ? ep->identity : 0;

	if (packet_direction == SEPTUM_DIR_INGRESS) {
		report->src_identity = peer_identity;
		report->dst_identity = local;
	} else {
		report->src_identity = local;
		report->dst_identity = peer_identity;
	}
}

/* What every event reports the same way: where the packet was seen (the
 * hook, its direction), whose it is (the endpoint, when known, and both
 * identities), the event type and verdict, and the endpoint's audit mode.
 * The caller adds what the event covers (bytes, packets), the policy entry,
 * and for an event about a connection its direction and reply bit. */
static __always_inline void septum_report_fill(struct septum_report *report,
					       const struct septum_hook *hook,
					       const struct septum_endpoint *ep,
					       __u32 peer_identity, __u8 event_type,
					       __u8 verdict)
{
	septum_identities(report, ep, hook->direction, peer_identity);
	report->ifindex = hook->ifindex;
	report->endpoint_id = ep ? ep->endpoint_id : 0;
	report->event_type = event_type;
	report->verdict = verdict;
	report->direction = hook->direction;
	report->trace_point = hook->trace_point;
	if (ep && (ep->flags & SEPTUM_EP_F_AUDIT))
		report->flags |= SEPTUM_EVENT_F_AUDIT_MODE;
}

static __always_inline void septum_count_lost(void)
{
	__u32 zero = 0;
	__u64 *lost = bpf_map_lookup_elem(&sep_lost, &zero);

	if (lost)
		*lost += 1;
}

/* Events carry CLOCK_BOOTTIME nanoseconds, read only when an event is emitted
 * (everything per packet uses jiffies, see septum_now). */
static __always_inline void septum_emit(const struct septum_pkt *pkt,
					const struct septum_report *report)
{
	struct septum_flow_event *event;

	event = bpf_ringbuf_reserve(&sep_events, sizeof(*event), 0);
	if (!event) {
		septum_count_lost();
		return;
	}
	event->time_ns = bpf_ktime_get_boot_ns();
	event->bytes = report->bytes;
	septum_copy16(event->src_addr, pkt->src);
	septum_copy16(event->dst_addr, pkt->dst);
	event->src_identity = report->src_identity;
	event->dst_identity = report->dst_identity;
	event->rule_id = report->rule_id;
	event->ifindex = report->ifindex;
	event->packets = report->packets;
	event->suppressed_drops = report->suppressed;
	event->match_type = report->match_type;
	event->flags = report->flags;
	event->reserved = 0;
	event->endpoint_id = report->endpoint_id;
	event->src_port = bpf_ntohs(pkt->sport_be);
	event->dst_port = bpf_ntohs(pkt->dport_be);
	event->drop_reason = report->drop_reason;
	event->l7_proxy_port = report->l7_proxy_port;
	event->event_type = report->event_type;
	event->verdict = report->verdict;
	event->direction = report->direction;
	event->is_reply = report->is_reply;
	event->ip_version = pkt->ip_version;
	event->protocol = pkt->protocol;
	event->icmp_type = pkt->icmp_type;
	event->icmp_code = pkt->icmp_code;
	event->tcp_flags = pkt->tcp_flags;
	event->trace_point = report->trace_point;
	__builtin_memcpy(event->src_mac, pkt->src_mac, sizeof(event->src_mac));
	__builtin_memcpy(event->dst_mac, pkt->dst_mac, sizeof(event->dst_mac));
	__builtin_memset(event->pad, 0, sizeof(event->pad)); /* reserved memory is not zeroed */
	bpf_ringbuf_submit(event, 0);
}

/* A 64-bit hash of the packet's tuple: multiply-xorshift over its words (a
 * few multiplies, cheaper than the map hashing a 48-byte key). */
static __always_inline __u64 septum_flow_hash(const struct septum_pkt *pkt)
{
	const __u64 *src = (const __u64 *)pkt->src;
	const __u64 *dst = (const __u64 *)pkt->dst;
	__u64 words[5] = {
		src[0], src[1], dst[0], dst[1],
		(__u64)pkt->sport_be | (__u64)pkt->dport_be << 16 | (__u64)pkt->protocol << 32 |
			(__u64)pkt->ip_version << 40,
	};
	__u64 h = 0x243f6a8885a308d3ULL;
	int i;

#pragma unroll
	for (i = 0; i < 5; i++) {
		h = (h ^ words[i]) * 0x9e3779b97f4a7c15ULL;
		h ^= h >> 29;
	}
	return h;
}

/* Rate limit for drop events: returns 1 when this drop should be reported
 * (and puts the number of drops suppressed since the last report in
 * *suppressed), 0 when it is counted as suppressed. */
static __always_inline int septum_drop_should_report(const struct septum_pkt *pkt,
						     __u32 ifindex, __u8 direction,
						     __u16 reason, __u64 now, __u64 interval,
						     __u32 *suppressed)
{
	struct septum_drop_key key = {
		.flow_hash = septum_flow_hash(pkt),
		.ifindex = ifindex,
		.direction = direction,
		.drop_reason = reason,
	};
	struct septum_drop_value fresh = { .last_event = now };
	struct septum_drop_value *seen;
	struct septum_drop_cache *cache;
	__u32 zero = 0;
	int same;

	cache = bpf_map_lookup_elem(&sep_drop_cache, &zero);
	if (!cache)
		return 0; /* cannot happen (array of one); keeps the verifier happy */
	same = cache->valid && cache->key.flow_hash == key.flow_hash &&
	       cache->key.ifindex == key.ifindex && cache->key.direction == key.direction &&
	       cache->key.drop_reason == key.drop_reason;
	if (same && now - cache->last_event < interval) {
		cache->suppressed += 1;
		return 0;
	}
	if (cache->valid && cache->suppressed) {
		/* Fold this CPU's count into the shared entry before deciding. */
		seen = bpf_map_lookup_elem(&sep_drop_rl, &cache->key);
		if (seen)
			seen->suppressed += cache->suppressed;
		cache->suppressed = 0;
	}
	cache->key = key;
	cache->valid = 1;

	seen = bpf_map_lookup_elem(&sep_drop_rl, &key);
	if (seen && now - seen->last_event < interval) {
		seen->suppressed += 1;
		cache->last_event = seen->last_event;
		return 0;
	}
	*suppressed = seen ? seen->suppressed : 0;
	cache->last_event = now;
	if (seen) {
		seen->last_event = now;
		seen->suppressed = 0;
	} else {
		bpf_map_update_elem(&sep_drop_rl, &key, &fresh, BPF_ANY);
	}
	return 1;
}

#endif
