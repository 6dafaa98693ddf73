// SPDX-License-Identifier: Apache-2.0
/*
 * Septum's datapath: entry programs only; the logic lives in bpf/lib/ (one header per concern).
 *
 *   septum_from_pod       tc ingress of a pod's host-side veth (pod egress); delivers
 *                         a packet to another pod of the node itself (lib/localdelivery.h)
 *   septum_to_pod         tc egress of a pod's host-side veth (pod ingress)
 *   septum_from_netdev    tc ingress of a node interface (host ingress: packets
 *                         addressed to the node itself; the rest passes untouched)
 *   septum_to_netdev      tc egress of a node interface (host egress: packets the
 *                         node itself sends)
 *   septum_xdp_prefilter  XDP on the node's uplink: the CIDR deny list
 *   bench_emit            never attached: one flow event per test run
 *   bench_empty           never attached: the empty tc baseline
 *   bench_new_floor       never attached: only the map operations and event a new
 *                         connection cannot do without (the floor of new_allow_ns)
 *   septum_jiffies        never attached: the datapath's clock, for user space
 */
#include "lib/common.h"
#include "lib/abi_anchor.h"
#include "lib/verdict.h"
#include "lib/localdelivery.h"
#include "lib/prefilter.h"
#include "lib/host.h"

SEC("tc")
int septum_from_pod(struct __sk_buff *skb)
{
	struct septum_hook hook = {
		.ifindex = skb->ifindex,
		.direction = SEPTUM_DIR_EGRESS,
		.trace_point = SEPTUM_TRACE_FROM_ENDPOINT,
		.flags = SEPTUM_HOOK_F_DELIVERY_SOURCE,
	};
	int ret;

	/* Hairpinned by septum_to_pod towards the L7 proxy (lib/proxy.h); a
	 * pod's own packets never carry a mark (it does not cross the veth). */
	if ((skb->mark & SEPTUM_MARK_MAGIC_MASK) == SEPTUM_MARK_TO_PROXY)
		return septum_proxy_hairpin_in(skb);
	ret = septum_handle_endpoint(skb, &hook);
	if (ret == SEPTUM_FORWARD_LOCAL || ret == SEPTUM_FORWARD_NEW)
		return septum_local_deliver(skb, ret == SEPTUM_FORWARD_NEW);
	return ret;
}

SEC("tc")
int septum_to_pod(struct __sk_buff *skb)
{
	struct septum_hook hook = {
		.ifindex = skb->ifindex,
		.direction = SEPTUM_DIR_INGRESS,
		.trace_point = SEPTUM_TRACE_TO_ENDPOINT,
	};

	/* Decided at the source pod's hook, which ran this one's part already
	 * (lib/localdelivery.h, a neighbour to resolve). */
	if ((skb->mark & SEPTUM_MARK_MAGIC_MASK) == SEPTUM_MARK_DELIVERED) {
		skb->mark = 0;
		return SEPTUM_TC_FORWARD;
	}
	return septum_handle_endpoint(skb, &hook);
}

/* The host endpoint's programs.  Unlike a pod's veth, where the hook's side is
 * the opposite of the pod's direction, a node interface's ingress is the host's
 * ingress.  Packets that are not the node's own -- pod traffic routed through
 * the node, already decided at a pod's veth -- pass before anything is parsed,
 * counted or tracked. */
SEC("tc")
int septum_from_netdev(struct __sk_buff *skb)
{
	struct septum_hook hook = {
		.ifindex = skb->ifindex,
		.direction = SEPTUM_DIR_INGRESS,
		.trace_point = SEPTUM_TRACE_FROM_NETWORK,
	};

	if (!septum_host_packet(skb, SEPTUM_DIR_INGRESS))
		return SEPTUM_TC_FORWARD;
	return septum_handle_endpoint(skb, &hook);
}

SEC("tc")
int septum_to_netdev(struct __sk_buff *skb)
{
	struct septum_hook hook = {
		.ifindex = skb->ifindex,
		.direction = SEPTUM_DIR_EGRESS,
		.trace_point = SEPTUM_TRACE_TO_NETWORK,
	};

	if (!septum_host_packet(skb, SEPTUM_DIR_EGRESS))
		return SEPTUM_TC_FORWARD;
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
	/* Not counted: the counters have no hook dimension, and a passed packet
	 * meant for a pod is counted by the pod's hook (non-IP frames and the
	 * node's own traffic by nobody).  Only the prefilter's drops are ours. */
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

/* The floor under the new-connection path: the operations no allowed new
 * IPv4 connection can skip, in the production maps and with the production
 * helpers, and nothing else: the conntrack lookup, the endpoint, the peer's
 * identity (ipcache), its policy entry, the LRU conntrack insert, the per-CPU
 * counter and a ring-buffer event with its CLOCK_BOOTTIME time.  No parsing
 * beyond the fixed offsets of an option-less IPv4 header, no validation,
 * anti-spoofing, conntrack state or event fields beyond the time and rule.
 * `septum bench datapath` runs it beside septum_from_pod so the distance
 * between what the datapath costs and what it cannot avoid is measured on the
 * machine at hand. */
SEC("tc")
int bench_new_floor(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct iphdr *ip = data + ETH_HLEN;
	__be16 *ports = (void *)(ip + 1);
	const struct septum_config *cfg = septum_config_get();
	__u8 peer_addr[16] SEPTUM_ALIGNED = {};
	struct septum_ct_entry entry = {};
	const struct septum_policy_value *hit;
	const struct septum_endpoint *ep;
	struct septum_flow_event *event;
	struct septum_ct4_key key;
	__u32 peer_identity;
	int order;

	if ((void *)(ports + 2) > data_end)
		return SEPTUM_TC_DROP;
	order = septum_ct4_order(ip->saddr, ip->daddr, ports[0], ports[1]);
	septum_ct4_key_fill(&key, ip->saddr, ip->daddr, ports[0], ports[1], skb->ifindex,
			    ip->protocol, order);
	bpf_map_lookup_elem(&sep_ct4, &key); /* ignored, as the bench's forced new path does */
	ep = septum_endpoint_lookup(skb->ifindex);
	if (!ep)
		return SEPTUM_TC_DROP;
	*(__u32 *)peer_addr = ip->daddr;
	peer_identity = septum_ipcache_identity(peer_addr, SEPTUM_IP_V4);
	hit = septum_policy_lookup(ep, SEPTUM_DIR_EGRESS, peer_identity, ip->protocol, ports[1]);
	if (!hit)
		return SEPTUM_TC_DROP;
	entry.expires = septum_now() + septum_ct_timeout(SEPTUM_CT_ESTABLISHED, cfg);
	entry.rule_id = hit->rule_id;
	entry.peer_identity = peer_identity;
	if (bpf_map_update_elem(&sep_ct4, &key, &entry, BPF_ANY))
		return SEPTUM_TC_DROP;
	septum_count(SEPTUM_DIR_EGRESS, SEPTUM_VERDICT_FORWARDED, SEPTUM_DROP_NONE, skb->len);
	event = bpf_ringbuf_reserve(&sep_events, sizeof(*event), 0);
	if (!event)
		return SEPTUM_TC_FORWARD;
	__builtin_memset(event, 0, sizeof(*event)); /* production writes every field too */
	event->time_ns = bpf_ktime_get_boot_ns();
	event->rule_id = hit->rule_id;
	event->flags = SEPTUM_EVENT_F_BENCH;
	bpf_ringbuf_submit(event, 0);
	return SEPTUM_TC_FORWARD;
}

/* The clock of every conntrack deadline and drop interval (jiffies_64), which
 * user space cannot read otherwise: written into the first 8 bytes of the
 * test-run packet.  The agent's conntrack garbage collection compares entries
 * against it (NodeDatapath.gc_conntrack). */
SEC("tc")
int septum_jiffies(struct __sk_buff *skb)
{
	__u64 now = septum_now();

	if (bpf_skb_store_bytes(skb, 0, &now, sizeof(now), 0))
		return SEPTUM_TC_DROP;
	return SEPTUM_TC_FORWARD;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
