/* SPDX-License-Identifier: Apache-2.0 */
/*
 * BTF anchors: unused read-only variables whose only job is to put types of
 * abi.h into the object's BTF, where the loader checks the Python mirrors
 * against them (septum.dataplane.btfcheck, as Cilium's alignchecker).  clang
 * emits BTF for a type only when something in the object uses it.
 */
#ifndef SEPTUM_LIB_ABI_ANCHOR_H
#define SEPTUM_LIB_ABI_ANCHOR_H

#include "common.h"

/* The ring buffer carries no BTF type: the flow event struct gets in here. */
const struct septum_flow_event septum_flow_event_btf_anchor __attribute__((used)) = {};

/* Map fields hold enum values in __u8/__u16/__u32: every enum gets in here,
 * through one member of its type each. */
const struct septum_abi_enums septum_abi_enums_btf_anchor __attribute__((used)) = {};

#endif
