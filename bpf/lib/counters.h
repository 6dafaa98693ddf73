/* SPDX-License-Identifier: Apache-2.0 */
/* Per-CPU packet/byte counters by (direction, verdict, drop reason). */
#ifndef SEPTUM_LIB_COUNTERS_H
#define SEPTUM_LIB_COUNTERS_H

#include "common.h"

/* Written by: every program, once per packet (per CPU, so no atomics).
 * Read by: the agent (sums the CPUs). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct septum_counter);
	__uint(max_entries, SEPTUM_COUNTER_ENTRIES);
} sep_counters SEC(".maps");

static __always_inline void septum_count(__u8 direction, __u8 verdict, __u16 reason, __u32 bytes)
{
	__u32 index = SEPTUM_COUNTER_INDEX(direction, verdict, reason);
	struct septum_counter *counter = bpf_map_lookup_elem(&sep_counters, &index);

	if (counter) {
		counter->packets += 1;
		counter->bytes += bytes;
	}
}

#endif
