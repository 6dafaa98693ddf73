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

/* Used when the map is still zero (agent not finished): Cilium-like defaults. */
static const struct septum_config septum_default_config = {
	.ct_timeout_tcp_syn_s = 60,
	.ct_timeout_tcp_established_s = 21600,
	.ct_timeout_tcp_close_s = 10,
	.ct_timeout_other_s = 60,
	.drop_event_interval_ms = 1000,
	.flags = 0,
};

static __always_inline const struct septum_config *septum_config_get(void)
{
	__u32 zero = 0;
	const struct septum_config *cfg = bpf_map_lookup_elem(&sep_config, &zero);

	if (!cfg || cfg->ct_timeout_tcp_established_s == 0)
		return &septum_default_config;
	return cfg;
}

#endif
