// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Septum's benchmark peer: Cilium's own endpoint program (bpf_lxc.c, cil_from_container)
 * compiled through Cilium's BPF unit-test scaffolding (bpf/tests/lib/bpf_lxc.h), so the
 * object is what Cilium's own datapath tests run, with the knobs moved from the tests'
 * values to what cilium-agent uses by default. Built by lab/gobuild/build-cilium-peer.sh
 * against the pinned github.com/cilium/cilium module; nothing here is Cilium's file.
 *
 * Why each knob (the test headers default otherwise):
 *   SKIP_DEBUG             ep_config.h turns DEBUG on for tests; the agent runs without
 *                          --debug, so no cilium_dbg() events.
 *   MONITOR_AGGREGATION 3  "medium", the agent's and the Helm chart's default (the test
 *                          node_config.h uses 5, "maximum").
 *   POLICY_VERDICT_NOTIFY  bpf-events-policy-verdict-enabled, on by default.
 *   ENABLE_SIP_VERIFICATION enable-source-ip-verification, on by default.
 *   trace_payload_len 128  --trace-payloadlen default (0 in tests, which silences traces).
 *   policy_verdict_log_filter 2  what the agent writes for an endpoint with egress policy
 *                          enforced (bit 0x2, pkg/endpoint GetPolicyVerdictLogFilter).
 *   enable_policy_accounting, enable_identity_mark  agent defaults (true).
 * Conntrack sizes are set at load time by the loader (the agent's 512Ki TCP / 256Ki any),
 * as the agent sizes its maps; DROP_NOTIFY and TRACE_NOTIFY are already on in ep_config.h.
 */
#define SKIP_DEBUG
#define MONITOR_AGGREGATION 3
#define POLICY_VERDICT_NOTIFY
#define ENABLE_SIP_VERIFICATION
#define ENABLE_IPV4

#include <bpf/ctx/skb.h>
#include "common.h"
#include "pktgen.h" /* the scaffolding's addresses (v4_svc_loopback, ...) */

#include "lib/bpf_lxc.h"

/* The endpoint: Septum's benchmarked pod, 10.199.0.1, identity 5000, endpoint 1. */
ASSIGN_CONFIG(union v4addr, endpoint_ipv4, { .be32 = bpf_htonl(0x0ac70001) })
ASSIGN_CONFIG(__u32, security_label, 5000)
ASSIGN_CONFIG(__u16, endpoint_id, 1)
ASSIGN_CONFIG(__u32, policy_verdict_log_filter, 0x2)
ASSIGN_CONFIG(__u32, trace_payload_len, 128)
ASSIGN_CONFIG(bool, enable_policy_accounting, true)
ASSIGN_CONFIG(bool, enable_identity_mark, true)

/* The same-run baseline: an empty tc program in the same collection, as Septum's
 * bench_empty is in Septum's object, so each side divides by its own empty run. */
__section_entry
int septum_peer_empty(struct __ctx_buff *ctx __maybe_unused)
{
	return CTX_ACT_OK;
}
