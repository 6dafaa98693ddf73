/* SPDX-License-Identifier: Apache-2.0 */
/* Node configuration: timeouts, drop-event interval, revoke/bench flags. */
#ifndef SEPTUM_LIB_CONFIG_H
#define SEPTUM_LIB_CONFIG_H

#include "common.h"

/* Written by: the agent (septum.dataplane), once after load and on config
 * changes.  Read by: every program, once per packet. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct septum_config);
	__uint(max_entries, 1);
} sep_config SEC(".maps");

/* Used when the map is still zero (agent not finished): Cilium-like defaults,
 * and HZ=250 (the agent always writes the running kernel's HZ). */
static const struct septum_config septum_default_config = {
	.ct_timeout_tcp_syn_s = 60,
	.ct_timeout_tcp_established_s = 21600,
	.ct_timeout_tcp_close_s = 10,
	.ct_timeout_other_s = 60,
	.drop_event_interval_ms = 1000,
	.flags = 0,
	.kernel_hz = 250,
};

static __always_inline const struct septum_config *septum_config_get(void)
{
	__u32 zero = 0;
	const struct septum_config *cfg = bpf_map_lookup_elem(&sep_config, &zero);

	if (!cfg || cfg->ct_timeout_tcp_established_s == 0 || cfg->kernel_hz == 0)
		return &septum_default_config;
	return cfg;
}

/* Per-packet time is jiffies: bpf_jiffies64 is inlined by the verifier into
 * one load, where a clock helper call cost ~10 ns per packet on this VM.
 * Conntrack deadlines and drop intervals need no finer resolution. */
static __always_inline __u64 septum_now(void)
{
	return bpf_jiffies64();
}

static __always_inline __u64 septum_seconds(__u32 seconds, const struct septum_config *cfg)
{
	return (__u64)seconds * cfg->kernel_hz;
}

/* Rounded up: an interval never gets shorter than configured. */
static __always_inline __u64 septum_millis(__u32 ms, const struct septum_config *cfg)
{
	return ((__u64)ms * cfg->kernel_hz + 999) / 1000;
}

#endif
