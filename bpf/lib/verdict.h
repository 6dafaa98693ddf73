/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The per-packet pipeline of an endpoint hook: parse, find the endpoint,
 * anti-spoof, resolve fragments, conntrack, policy for new connections,
 * events and counters.  Entry programs in septum.bpf.c call
 * septum_handle_endpoint() with their hook; it hands the packet to three
 * stages in turn (fast path, related ICMP error, full path), each of which
 * finishes it or answers SEPTUM_CONTINUE.
 */
#ifndef SEPTUM_LIB_VERDICT_H
#define SEPTUM_LIB_VERDICT_H

#include "common.h"
#include "config.h"
#include "parse.h"
#include "endpoint.h"
#include "ipcache.h"
#include "policy.h"
#include "conntrack.h"
#include "fragments.h"
#include "counters.h"
#include "events.h"
#include "fastpath.h"
#include "icmp_related.h"
#include "proxy.h"
#include "localaddrs.h"

/* Headers the parser may need: Ethernet + IPv6 + the bounded extension-header
 * walk + the largest L4 header (see SEPTUM_MAX_L4_OFFSET). */
#define SEPTUM_PULL_LEN 600

/* The outcome of policy for one connection. */
struct septum_decision {
	__u32 rule_id;
	__u16 reason;        /* why it was (or, for AUDIT, would have been) dropped */
	__u16 l7_proxy_port;
	__u8 verdict;
	__u8 match_type;
	__u8 is_reply; /* a drop of a reply of a known connection (reported as such) */
};

/* Count and (rate-limited) report a drop; returns the tc drop code. */
static __always_inline int septum_drop(const struct septum_pkt *pkt,
				       const struct septum_hook *hook,
				       const struct septum_endpoint *ep,
				       const struct septum_config *cfg, __u64 now, __u16 reason,
				       const struct septum_decision *decision, __u32 peer_identity)
{
	struct septum_report report = {};
	__u32 suppressed = 0;

	septum_count(hook->direction, SEPTUM_VERDICT_DROPPED, reason, pkt->len);
	if (!septum_drop_should_report(pkt, hook->ifindex, hook->direction, reason, now,
				       septum_millis(cfg->drop_event_interval_ms, cfg), &suppressed))
		return SEPTUM_TC_DROP;
	if (!ep)
		ep = septum_endpoint_lookup(hook->ifindex); /* for the report only */
	if (!peer_identity)
		peer_identity = septum_peer_identity(pkt, hook->direction);
	septum_report_fill(&report, hook, ep, peer_identity, SEPTUM_EVENT_DROP,
			   SEPTUM_VERDICT_DROPPED);
	report.bytes = pkt->len;
	report.packets = 1;
	report.suppressed = suppressed;
	report.drop_reason = reason;
	if (decision) {
		report.rule_id = decision->rule_id;
		report.match_type = decision->match_type;
		if (decision->is_reply) {
			/* events carry the connection's direction; this packet went against it */
			report.direction = septum_opposite(hook->direction);
			report.is_reply = 1;
		}
	}
	septum_emit(pkt, &report);
	return SEPTUM_TC_DROP;
}

/* Policy for a connection of the endpoint in `direction` (relative to the pod). */
static __always_inline void septum_decide(const struct septum_endpoint *ep, __u8 direction,
					  __u32 peer_identity, __u8 protocol, __u16 port_be,
					  struct septum_decision *decision)
{
	const struct septum_policy_value *hit;
	int audit;

	decision->verdict = SEPTUM_VERDICT_FORWARDED;
	if (!septum_direction_enforced(ep, direction))
		return; /* no policy selects the pod this way: allow all */
	hit = septum_policy_lookup(ep, direction, peer_identity, protocol, port_be);
	if (hit) {
		decision->rule_id = hit->rule_id;
		decision->match_type = hit->match_type;
		if (hit->action == SEPTUM_ACTION_ALLOW) {
			decision->l7_proxy_port = hit->l7_proxy_port;
			return;
		}
	}
	decision->reason = hit ? SEPTUM_DROP_POLICY_DENY : SEPTUM_DROP_POLICY_DENIED;
	audit = (ep->flags & SEPTUM_EP_F_AUDIT) || (hit && (hit->flags & SEPTUM_POLICY_F_AUDIT));
	decision->verdict = audit ? SEPTUM_VERDICT_AUDIT : SEPTUM_VERDICT_DROPPED;
}

static __always_inline int septum_new_connection(struct septum_pkt *pkt,
						 const struct septum_hook *hook,
						 const struct septum_endpoint *ep,
						 const struct septum_config *cfg, __u64 now,
						 const struct septum_ct_lookup *ct, __u32 mark)
{
	struct septum_decision decision = {};
	struct septum_ct_entry entry = {};
	struct septum_report report = {};
	/* A proxy's upstream connection is decided as its client's would be:
	 * the source identity rides in the socket mark (only towards a pod, where
	 * the peer is the source). */
	__u32 proxied = septum_proxy_mark_identity(mark);
	__u32 peer_identity = proxied | (septum_peer_identity(pkt, hook->direction) &
					 septum_zero_mask(proxied));

	septum_decide(ep, hook->direction, peer_identity, pkt->protocol, pkt->policy_port_be,
		      &decision);
	if (decision.verdict == SEPTUM_VERDICT_DROPPED)
		return septum_drop(pkt, hook, ep, cfg, now, decision.reason, &decision,
				   peer_identity);

	entry.state = septum_ct_initial_state(pkt);
	entry.expires = now + septum_ct_timeout(entry.state, cfg);
	entry.rule_id = decision.rule_id;
	entry.policy_revision = ep->policy_revision;
	entry.peer_identity = peer_identity;
	entry.l7_proxy_port = decision.l7_proxy_port;
	entry.verdict = decision.verdict;
	entry.match_type = decision.match_type;
	entry.fwd_flags_seen = pkt->tcp_flags;
	entry.orig_direction = hook->direction;
	entry.orig_swapped = ct->order > 0;
	if (hook->flags & SEPTUM_HOOK_F_DELIVERY_TARGET)
		entry.flags = SEPTUM_CT_F_LOCAL; /* its source's program delivers it */
	if (septum_ct_icmp_tracked(pkt) && septum_ct_insert(ct, pkt, hook->ifindex, &entry))
		return septum_drop(pkt, hook, ep, cfg, now, SEPTUM_DROP_CT_MAP_INSERTION_FAILED,
				   &decision, peer_identity);

	septum_count(hook->direction, decision.verdict, decision.reason, pkt->len);
	septum_report_fill(&report, hook, ep, peer_identity, SEPTUM_EVENT_POLICY_VERDICT,
			   decision.verdict);
	report.bytes = pkt->len;
	report.packets = 1;
	report.rule_id = decision.rule_id;
	report.match_type = decision.match_type;
	report.drop_reason = decision.reason;
	report.l7_proxy_port = decision.l7_proxy_port;
	if (entry.state == SEPTUM_CT_CLOSING)
		report.flags |= SEPTUM_EVENT_F_CT_CLOSE;
	septum_emit(pkt, &report);
	if (decision.l7_proxy_port)
		return septum_proxy_pending(decision.l7_proxy_port);
	/* The source's program may deliver it itself: a TCP or UDP connection (the
	 * fast path's key finds its entry again), not a fragment, to a pod of this
	 * node (asked here, where the address is at hand: a call out to ask costs
	 * every new connection ~30 ns more; see localdelivery.h). */
	if ((hook->flags & SEPTUM_HOOK_F_DELIVERY_SOURCE) &&
	    (cfg->flags & SEPTUM_CFG_F_LOCAL_DELIVERY) && pkt->frag == SEPTUM_FRAG_NONE &&
	    (pkt->protocol == IPPROTO_TCP || pkt->protocol == IPPROTO_UDP) &&
	    septum_is_local_addr(pkt->dst, pkt->ip_version))
		return SEPTUM_FORWARD_NEW;
	return SEPTUM_TC_FORWARD;
}

/* Revocation mode: an established connection whose endpoint has a newer
 * policy revision is decided again, as its first packet would be now.
 * Returns 0 to keep it, or the drop reason. */
static __always_inline __u16 septum_recheck(struct septum_ct_entry *entry,
					    const struct septum_ct_key *original,
					    const struct septum_endpoint *ep,
					    struct septum_decision *decision, __u32 *peer_identity)
{
	__u16 port_be = original->dport_be;

	if (original->protocol == IPPROTO_ICMP)
		port_be = bpf_htons(SEPTUM_POLICY_ICMP_TYPE | SEPTUM_ICMP_ECHO);
	else if (original->protocol == IPPROTO_ICMPV6)
		port_be = bpf_htons(SEPTUM_POLICY_ICMP_TYPE | SEPTUM_ICMPV6_ECHO_REQUEST);
	*peer_identity = septum_ipcache_identity(original->direction == SEPTUM_DIR_INGRESS
							 ? original->src_addr
							 : original->dst_addr,
						 original->ip_version);
	septum_decide(ep, original->direction, *peer_identity, original->protocol, port_be,
		      decision);
	if (decision->verdict == SEPTUM_VERDICT_DROPPED)
		return decision->reason;
	entry->policy_revision = ep->policy_revision;
	entry->rule_id = decision->rule_id;
	entry->verdict = decision->verdict;
	entry->match_type = decision->match_type;
	/* A connection moves into or out of the proxy only at its start: the
	 * proxy never saw the handshake of one allowed without it. */
	if (entry->l7_proxy_port && decision->l7_proxy_port)
		entry->l7_proxy_port = decision->l7_proxy_port;
	entry->peer_identity = *peer_identity;
	return 0;
}

static __always_inline int septum_established(struct septum_pkt *pkt,
					      const struct septum_hook *hook,
					      const struct septum_endpoint *ep,
					      const struct septum_config *cfg, __u64 now,
					      struct septum_ct_entry *entry, __u8 is_reply)
{
	struct septum_report report = {};
	__u8 *flags_seen = is_reply ? &entry->rev_flags_seen : &entry->fwd_flags_seen;
	__u8 new_flags = pkt->tcp_flags & ~*flags_seen;
	int report_it = (new_flags & SEPTUM_EVENT_TCP_FLAGS) != 0;
	__u8 closed = 0; /* this packet moved the entry to CLOSING */
	__u64 expires;
	__u8 state;

	if (entry->verdict == SEPTUM_VERDICT_DROPPED) {
		struct septum_decision revoked = {
			.rule_id = entry->rule_id,
			.match_type = entry->match_type,
			.is_reply = is_reply,
		};

		return septum_drop(pkt, hook, ep, cfg, now, entry->drop_reason, &revoked,
				   entry->peer_identity);
	}
	if (cfg->flags & SEPTUM_CFG_F_REVOKE_ON_POLICY_CHANGE) {
		ep = septum_endpoint_lookup(hook->ifindex);
		if (!ep)
			return septum_drop(pkt, hook, ep, cfg, now,
					   SEPTUM_DROP_NO_LOCAL_ENDPOINT, NULL, 0);
	}
	if (ep && entry->policy_revision != ep->policy_revision) {
		struct septum_decision decision = {};
		struct septum_ct_key original SEPTUM_ALIGNED = {};
		__u32 peer_identity = 0;
		__u16 reason;

		septum_ct_original(&original, pkt, is_reply, entry->orig_direction);
		reason = septum_recheck(entry, &original, ep, &decision, &peer_identity);

		if (reason) {
			/* Keep the entry, revoked: both directions of the flow now
			 * drop, and a packet of the other side cannot pick the flow
			 * up again as a new connection of its own.  A fresh SYN
			 * (state CLOSING) asks policy again. */
			entry->verdict = SEPTUM_VERDICT_DROPPED;
			entry->drop_reason = reason;
			entry->rule_id = decision.rule_id;
			entry->state = SEPTUM_CT_CLOSING;
			entry->expires = now + septum_seconds(cfg->ct_timeout_tcp_syn_s, cfg);
			decision.is_reply = is_reply;
			return septum_drop(pkt, hook, ep, cfg, now, reason, &decision,
					   peer_identity);
		}
	}

	/* Write the shared entry only what changed: the deadline moves once per
	 * jiffy, the state and flags a few times per connection. */
	state = septum_ct_next_state(entry->state, pkt,
				     is_reply ? entry->fwd_flags_seen : entry->rev_flags_seen);
	if (state != entry->state) {
		closed = state == SEPTUM_CT_CLOSING;
		entry->state = state;
	}
	expires = now + septum_ct_timeout(state, cfg);
	if (entry->expires != expires)
		entry->expires = expires;
	if (new_flags)
		*flags_seen |= new_flags;
	if (is_reply) {
		entry->rev_packets += 1;
		entry->rev_bytes += pkt->len;
		if (!(entry->flags & SEPTUM_CT_F_REPLY_SEEN)) {
			entry->flags |= SEPTUM_CT_F_REPLY_SEEN;
			report_it = 1;
		}
	} else {
		entry->fwd_packets += 1;
		entry->fwd_bytes += pkt->len;
	}
	septum_count(hook->direction, entry->verdict, SEPTUM_DROP_NONE, pkt->len);
	if (!report_it)
		return SEPTUM_TC_FORWARD;

	if (!ep)
		ep = septum_endpoint_lookup(hook->ifindex); /* only now: events are rare */
	septum_report_fill(&report, hook, ep, entry->peer_identity, SEPTUM_EVENT_TRACE,
			   entry->verdict);
	if (is_reply) {
		report.bytes = entry->rev_bytes;
		report.packets = entry->rev_packets;
		entry->rev_bytes = 0;
		entry->rev_packets = 0;
	} else {
		report.bytes = entry->fwd_bytes;
		report.packets = entry->fwd_packets;
		entry->fwd_bytes = 0;
		entry->fwd_packets = 0;
	}
	report.rule_id = entry->rule_id;
	report.match_type = entry->match_type;
	report.l7_proxy_port = entry->l7_proxy_port;
	report.direction = entry->orig_direction; /* the connection's, not the packet's */
	report.is_reply = is_reply;
	if (closed) /* always with a new flag: the second side's FIN, or an RST */
		report.flags |= SEPTUM_EVENT_F_CT_CLOSE;
	septum_emit(pkt, &report);
	return SEPTUM_TC_FORWARD;
}

/* The full path: parse, conntrack, and for a new connection endpoint, ipcache
 * and policy; every drop, event and conntrack insert.  An allowed packet of an
 * L7-redirected connection comes back as SEPTUM_PROXY_PENDING | proxy port:
 * the redirect (lib/proxy.h) runs after this function returned, so its
 * socket lookups add neither to this frame (512 bytes of stack for the
 * whole call chain) nor to the states the verifier walks here.  A global (not inlined)
 * BPF function, so the verifier checks it once, on its own, instead of once
 * per way the fast path can hand a packet over: it takes only the context and
 * scalars.  ct_absent: the fast path already looked this packet's tuple up
 * (same key, see fastpath.h) and found nothing, so the lookup is skipped.
 *
 * The established path looks up nothing but the conntrack entry: the key is
 * scoped by ifindex, anti-spoofing was checked when the entry was created, and
 * the endpoint is only read when an event is reported or revocation is on. */
__attribute__((noinline)) int septum_full_path(struct __sk_buff *skb, __u32 ifindex,
					       __u32 direction, __u32 point_flags,
					       __u32 ct_absent)
{
	const struct septum_config *cfg = septum_config_get();
	struct septum_hook hooks = {
		.ifindex = ifindex,
		.direction = direction,
		.trace_point = point_flags & 0xff,
		.flags = point_flags >> 8,
	};
	const struct septum_hook *hook = &hooks;
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	__u32 wire_len = skb->len;
	struct septum_ct_lookup lookup;
	struct septum_ct_lookup *ct = &lookup;
	struct septum_pkt pkt = {};
	const struct septum_endpoint *ep;
	struct septum_ct_entry *entry;
	__u64 now = septum_now();
	__u8 is_reply = 0;
	int ret;

	ret = septum_parse(data, data_end, wire_len, &pkt);
	if (ret != SEPTUM_PARSE_OK && ret != SEPTUM_PARSE_BYPASS &&
	    (__u32)(data_end - data) < wire_len) {
		/* Headers beyond the linear data (a GSO skb keeps little in it):
		 * pull them in and parse again.  Only here, never up front: a pull
		 * on every packet would cost more than the whole datapath. */
		__u32 want = wire_len < SEPTUM_PULL_LEN ? wire_len : SEPTUM_PULL_LEN;

		if (bpf_skb_pull_data(skb, want) == 0) {
			data = (void *)(long)skb->data;
			data_end = (void *)(long)skb->data_end;
			__builtin_memset(&pkt, 0, sizeof(pkt));
			ret = septum_parse(data, data_end, wire_len, &pkt);
		}
	}
	if (ret == SEPTUM_PARSE_BYPASS) {
		septum_count(hook->direction, SEPTUM_VERDICT_FORWARDED, SEPTUM_DROP_NONE, wire_len);
		return SEPTUM_TC_FORWARD;
	}
	if (ret != SEPTUM_PARSE_OK)
		return septum_drop(&pkt, hook, NULL, cfg, now, ret, NULL, 0);
	ret = septum_frag_resolve(&pkt);
	if (ret != SEPTUM_PARSE_OK)
		return septum_drop(&pkt, hook, NULL, cfg, now, ret, NULL, 0);
	if (cfg->flags & SEPTUM_CFG_F_BENCH_NEW_FLOWS) {
		/* Benchmark only: a fresh tuple per run (random bits in fields
		 * policy never reads: the source port, and source address bits
		 * the key holds: 32 for IPv4, 48 for IPv6) so every repeat takes
		 * the new-connection path. */
		pkt.sport_be ^= (__u16)bpf_get_prandom_u32();
		if (pkt.ip_version == SEPTUM_IP_V4)
			*(__u16 *)&pkt.src[2] ^= (__u16)bpf_get_prandom_u32();
		else
			*(__u32 *)&pkt.src[12] = bpf_get_prandom_u32();
		ct_absent = 0;
	}

	/* One lookup for both directions (the key is canonical), unless the
	 * fast path found this very tuple absent already: it looks up only
	 * unfragmented TCP/UDP, whose tuple the parser reads the same way. */
	septum_ct_find(ct, &pkt, hook->ifindex, ct_absent);
	entry = ct->entry;
	if (entry) {
		is_reply = hook->direction != entry->orig_direction;
		if (!septum_ct_matches(entry, ct->order, is_reply) ||
		    !septum_ct_icmp_matches(&pkt, is_reply))
			entry = NULL;
	}
	if (entry && entry->expires >= now &&
	    !septum_ct_is_reopen(entry, pkt.protocol, pkt.tcp_flags) &&
	    !(cfg->flags & SEPTUM_CFG_F_BENCH_FORCE_NEW)) {
		if ((hook->flags & SEPTUM_HOOK_F_DELIVERY_TARGET) &&
		    !(entry->flags & SEPTUM_CT_F_LOCAL))
			entry->flags |= SEPTUM_CT_F_LOCAL; /* as in the fast path */
		ret = septum_established(&pkt, hook, NULL, cfg, now, entry, is_reply);
		if (ret != SEPTUM_TC_FORWARD)
			return ret;
		/* The client's side of a connection the proxy terminates (entries
		 * of the host endpoint and of a proxy's upstream never have a port). */
		if (!is_reply && entry->l7_proxy_port)
			return septum_proxy_pending(entry->l7_proxy_port);
		if ((hook->flags & SEPTUM_HOOK_F_DELIVERY_SOURCE) &&
		    (entry->flags & SEPTUM_CT_F_LOCAL))
			return SEPTUM_FORWARD_LOCAL;
		return SEPTUM_TC_FORWARD;
	}

	ep = septum_endpoint_lookup(hook->ifindex);
	if (!ep)
		return septum_drop(&pkt, hook, ep, cfg, now, SEPTUM_DROP_NO_LOCAL_ENDPOINT, NULL,
				   0);
	if (hook->direction == SEPTUM_DIR_EGRESS && (ep->flags & SEPTUM_EP_F_CHECK_SOURCE) &&
	    !septum_endpoint_owns_source(ep, pkt.src, pkt.ip_version))
		return septum_drop(&pkt, hook, ep, cfg, now, SEPTUM_DROP_INVALID_SOURCE_IP, NULL,
				   0);
	return septum_new_connection(&pkt, hook, ep, cfg, now, ct,
				     direction == SEPTUM_DIR_INGRESS ? skb->mark : 0);
}

/* The redirect of a packet the full path allowed into the L7 proxy (see
 * lib/proxy.h).  Without a proxy socket the packet drops with its own reason
 * and a drop event (the connection fails closed); it was counted as
 * forwarded by policy already, so it shows in both counters.  A global
 * function: its socket lookups are verified once, in their own frame. */
__attribute__((noinline)) int septum_proxy_divert(struct __sk_buff *skb, __u32 ifindex,
						  __u32 direction, __u32 trace_point, __u32 port)
{
	struct septum_hook hook = {
		.ifindex = ifindex,
		.direction = direction,
		.trace_point = trace_point,
	};
	struct septum_pkt pkt = {};
	int reason;
	int ret;

	if (!skb)
		return SEPTUM_TC_DROP;
	/* The ingress proxy's own upstream is never sent back to it. */
	if (!septum_proxy_may_redirect(trace_point, skb->mark))
		return SEPTUM_TC_FORWARD;
	reason = septum_proxy_read(skb, &pkt);
	if (!reason) {
		ret = septum_proxy_send(skb, &pkt, ifindex, direction, port, &reason);
		if (!reason)
			return ret;
	}
	return septum_drop(&pkt, &hook, NULL, septum_config_get(), septum_now(), reason, NULL, 0);
}

/* Nothing is zeroed or parsed before the fast path had its go: the full
 * path's state lives in septum_full_path. */
static __always_inline int septum_handle_endpoint(struct __sk_buff *skb,
						  const struct septum_hook *hook)
{
	const struct septum_config *cfg = septum_config_get();
	__u64 now = septum_now();
	struct septum_ct_lookup ct;
	int ret;

	ct.done = 0;
	ret = septum_fast_established(skb, hook, cfg, now, &ct);
	if (ret != SEPTUM_CONTINUE)
		return ret;
	if (!ct.done && septum_maybe_icmp_error(skb)) {
		ret = septum_icmp_related(skb, hook->ifindex, hook->direction,
					  hook->trace_point | (__u32)hook->flags << 8);
		if (ret != SEPTUM_CONTINUE)
			return ret;
	}
	ret = septum_full_path(skb, hook->ifindex, hook->direction,
			       hook->trace_point | (__u32)hook->flags << 8, ct.done && !ct.entry);
	if (ret >= SEPTUM_PROXY_PENDING)
		return septum_proxy_divert(skb, hook->ifindex, hook->direction, hook->trace_point,
					   ret & 0xffff);
	return ret;
}

#endif
