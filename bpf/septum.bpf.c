// SPDX-License-Identifier: Apache-2.0
/*
 * Septum's datapath: entry programs only; the logic lives in bpf/lib/ (one header per concern).
 *
 *   septum_from_pod       tc ingress of a pod's host-side veth (pod egress)
 *   septum_to_pod         tc egress of a pod's host-side veth (pod ingress)
 *   septum_xdp_prefilter  XDP on the node's uplink: the CIDR deny list
 *   bench_emit            never attached: one flow event per test run
 *   bench_empty           never attached: the empty tc baseline
 */
#include "lib/common.h"
#include "lib/verdict.h"
#include "lib/prefilter.h"

SEC("tc")
int septum_from_pod(struct __sk_buff *skb)
{
	struct septum_hook hook = {
		.ifindex = skb->ifindex,
		.direction = SEPTUM_DIR_EGRESS,
		.trace_point = SEPTUM_TRACE_FROM_ENDPOINT,
	};

	return septum_handle_endpoint(skb, &hook);
}

SEC("tc")
int septum_to_pod(struct __sk_buff *skb)
{
	struct septum_hook hook = {
		.ifindex = skb->ifindex,
		.direction = SEPTUM_DIR_INGRESS,
		.trace_point = SEPTUM_TRACE_TO_ENDPOINT,
	};

	return septum_handle_endpoint(skb, &hook);
}

SEC("xdp")
int septum_xdp_prefilter(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct septum_hook hook = {
		.ifindex = ctx->ingress_ifindex,
		.direction = SEPTUM_DIR_INGRESS,
		.trace_point = SEPTUM_TRACE_FROM_NETWORK,
	};
	const struct septum_prefilter_value *deny;
	struct septum_decision decision = {};
	struct septum_pkt pkt = {};
	/* The whole frame, multi-buffer fragments included. */
	__u32 len = bpf_xdp_get_buff_len(ctx);

	/* Parse errors are not ours to punish at the uplink (the stack drops
	 * malformed packets); only the source address matters here, and it is
	 * known as soon as the IP header was read. */
	septum_parse(data, data_end, len, &pkt);
	if (pkt.ip_version == SEPTUM_IP_NONE)
		goto pass;
	deny = septum_prefilter_match(pkt.src, pkt.ip_version);
	if (!deny)
		goto pass;
	decision.rule_id = deny->rule_id;
	septum_drop(&pkt, &hook, NULL, septum_config_get(), septum_now(),
		    SEPTUM_DROP_PREFILTER_DENIED, &decision, 0);
	return XDP_DROP;
pass:
	septum_count(SEPTUM_DIR_INGRESS, SEPTUM_VERDICT_FORWARDED, SEPTUM_DROP_NONE, len);
	return XDP_PASS;
}

SEC("tc")
int bench_emit(struct __sk_buff *skb)
{
	struct septum_report report = {
		.bytes = skb->len,
		.packets = 1,
		.ifindex = skb->ifindex,
		.event_type = SEPTUM_EVENT_TRACE,
		.verdict = SEPTUM_VERDICT_FORWARDED,
		.direction = SEPTUM_DIR_EGRESS,
		.trace_point = SEPTUM_TRACE_FROM_ENDPOINT,
		.flags = SEPTUM_EVENT_F_BENCH,
	};
	struct septum_pkt pkt = {};

	septum_parse((void *)(long)skb->data, (void *)(long)skb->data_end, skb->len, &pkt);
	septum_emit(&pkt, &report);
	return SEPTUM_TC_FORWARD;
}

SEC("tc")
int bench_empty(struct __sk_buff *skb)
{
	return SEPTUM_TC_FORWARD;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
