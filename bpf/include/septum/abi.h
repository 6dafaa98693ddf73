/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Septum datapath ABI: the ONE definition of every struct, enum and map
 * key/value that crosses the kernel boundary.
 *
 * The Python mirror is dataplane/septum/dataplane/abi.py; at load time the
 * loader compares every ctypes mirror's size and field offsets, and every
 * Python enum's members, with the BTF of the compiled object (as Cilium's
 * alignchecker does), and tests/dataplane/test_abi_btf.py does the same.
 * Change a struct or an enum here and there, in the same commit.
 *
 * Every number user space relies on is an enum member, never a #define: BTF
 * records enums (a #define leaves no trace in the object), so the check sees
 * them all; the few macros below only derive from them.  BTF records an enum
 * only when the object uses it: see struct septum_abi_enums at the end.
 *
 * Conventions: fixed-width types only, explicit padding (the verifier and the
 * hash maps compare whole keys, so every padding byte must be named and
 * zeroed), units and byte order in the names (_ns, _s, _be).  Addresses are
 * always 16 bytes: IPv4 uses the first 4 bytes, the rest are zero.
 */
#ifndef SEPTUM_ABI_H
#define SEPTUM_ABI_H

#include <linux/types.h>

/* ---- enums ------------------------------------------------------------- */

/* The version of this ABI: bumped on a change that user space built for the
 * previous one cannot read. */
enum septum_abi_version {
	SEPTUM_ABI_VERSION = 1,
};

/* Verdicts: numerically equal to Hubble's flow.Verdict. */
enum septum_verdict {
	SEPTUM_VERDICT_UNKNOWN = 0,
	SEPTUM_VERDICT_FORWARDED = 1,
	SEPTUM_VERDICT_DROPPED = 2,
	SEPTUM_VERDICT_AUDIT = 4, /* would have been dropped; passed (audit mode) */
};

/* Traffic direction relative to the pod: numerically equal to Hubble's
 * flow.TrafficDirection.  INGRESS = towards the pod (tc egress of the host
 * veth, and XDP on the uplink), EGRESS = leaving the pod (tc ingress of the
 * host veth). */
enum septum_direction {
	SEPTUM_DIR_UNKNOWN = 0,
	SEPTUM_DIR_INGRESS = 1,
	SEPTUM_DIR_EGRESS = 2,
};

/* Drop reasons.  Where a reason exists in Hubble's flow.DropReason the number
 * is Hubble's (so drop_reason maps 1:1 onto it); reasons Hubble has no name
 * for (one per header boundary, the prefilter) use 220..239, a range Hubble
 * leaves unused.  All values are < SEPTUM_DROP_REASON_SLOTS: counters index
 * on the low byte. */
enum septum_drop_reason {
	SEPTUM_DROP_NONE = 0,                      /* not a drop */
	SEPTUM_DROP_INVALID_SOURCE_IP = 132,       /* pod sent from an address it does not own */
	SEPTUM_DROP_POLICY_DENIED = 133,           /* enforced direction, no allow entry matched */
	SEPTUM_DROP_INVALID_PACKET = 134,          /* malformed, no more specific reason */
	SEPTUM_DROP_UNSUPPORTED_L3_PROTOCOL = 139, /* ethertype not IPv4/IPv6/ARP */
	SEPTUM_DROP_NO_LOCAL_ENDPOINT = 152,       /* hook on an interface with no endpoint */
	SEPTUM_DROP_CT_MAP_INSERTION_FAILED = 155, /* conntrack insert failed */
	SEPTUM_DROP_INVALID_IPV6_EXTENSION_HEADER = 156, /* truncated/too many ext headers */
	SEPTUM_DROP_FRAG_NOT_FOUND = 175,          /* non-first fragment, first one never seen */
	SEPTUM_DROP_PROXY_LOOKUP_FAILED = 178,     /* L7 redirect: no proxy socket listens */
	SEPTUM_DROP_PROXY_ASSIGN_FAILED = 179,     /* L7 redirect: the proxy socket refused it */
	SEPTUM_DROP_POLICY_DENY = 181,             /* an explicit deny entry matched */
	SEPTUM_DROP_TRUNCATED_ETHERNET = 220,      /* shorter than an Ethernet header (incl. empty) */
	SEPTUM_DROP_TRUNCATED_IPV4 = 221,          /* shorter than the fixed IPv4 header */
	SEPTUM_DROP_INVALID_IPV4_IHL = 222,        /* IHL < 5 or options run past the packet */
	SEPTUM_DROP_INVALID_IPV4_LENGTH = 223,     /* total length < header or > packet */
	SEPTUM_DROP_TRUNCATED_IPV6 = 224,          /* shorter than the fixed IPv6 header */
	SEPTUM_DROP_INVALID_IPV6_LENGTH = 225,     /* payload length runs past the packet */
	SEPTUM_DROP_TRUNCATED_TCP = 226,           /* shorter than the fixed TCP header */
	SEPTUM_DROP_INVALID_TCP_DATA_OFFSET = 227, /* doff < 5 or past the IP payload */
	SEPTUM_DROP_TRUNCATED_UDP = 228,           /* shorter than a UDP header */
	SEPTUM_DROP_TRUNCATED_SCTP = 229,          /* shorter than the SCTP common header */
	SEPTUM_DROP_TRUNCATED_ICMP = 230,          /* shorter than the ICMP header */
	SEPTUM_DROP_TRUNCATED_ICMPV6 = 231,        /* shorter than the ICMPv6 header */
	SEPTUM_DROP_INVALID_IP_VERSION = 232,      /* version nibble disagrees with ethertype */
	SEPTUM_DROP_PREFILTER_DENIED = 233,        /* source on the node-wide XDP deny list */
};

/* Event types: numerically equal to Cilium's monitor MessageType, which is
 * what Hubble's flow.CiliumEventType.type carries. */
enum septum_event_type {
	SEPTUM_EVENT_DROP = 1,           /* a drop (sub type = drop reason) */
	SEPTUM_EVENT_TRACE = 4,          /* an established flow changed (flags, close, first reply) */
	SEPTUM_EVENT_POLICY_VERDICT = 5, /* a new connection was decided by policy */
};

/* Trace observation points: numerically equal to Hubble's
 * flow.TraceObservationPoint. */
enum septum_trace_point {
	SEPTUM_TRACE_UNKNOWN_POINT = 0,
	SEPTUM_TRACE_FROM_ENDPOINT = 5, /* tc ingress of the host veth: the pod sent it */
	SEPTUM_TRACE_FROM_NETWORK = 10, /* XDP or tc ingress on a node interface (uplink) */
	SEPTUM_TRACE_TO_NETWORK = 11,   /* tc egress on a node interface: the node sent it */
	SEPTUM_TRACE_TO_ENDPOINT = 101, /* tc egress of the host veth: towards the pod */
};

/* Which kind of policy entry decided: numerically equal to Cilium's
 * monitor PolicyMatchType (Hubble's flow.policy_match_type). */
enum septum_match_type {
	SEPTUM_MATCH_NONE = 0,    /* no entry (default allow/deny, or not a policy event) */
	SEPTUM_MATCH_L3_ONLY = 1, /* peer identity, any protocol/port */
	SEPTUM_MATCH_L3_L4 = 2,   /* peer identity + protocol/port */
	SEPTUM_MATCH_L4_ONLY = 3, /* any peer, protocol/port */
	SEPTUM_MATCH_ALL = 4,     /* any peer, any protocol */
};

enum septum_policy_action {
	SEPTUM_ACTION_NONE = 0, /* bucket head without an L3-only entry */
	SEPTUM_ACTION_ALLOW = 1,
	SEPTUM_ACTION_DENY = 2,
};

enum septum_ip_version {
	SEPTUM_IP_NONE = 0, /* Hubble IP_NOT_USED */
	SEPTUM_IP_V4 = 1,
	SEPTUM_IP_V6 = 2,
};

/* TCP flags as they sit in byte 13 of the TCP header. */
enum septum_tcp_flag {
	SEPTUM_TCP_FIN = 0x01,
	SEPTUM_TCP_SYN = 0x02,
	SEPTUM_TCP_RST = 0x04,
	SEPTUM_TCP_PSH = 0x08,
	SEPTUM_TCP_ACK = 0x10,
	SEPTUM_TCP_URG = 0x20,
	SEPTUM_TCP_ECE = 0x40,
	SEPTUM_TCP_CWR = 0x80,
};

/* The reserved security identities the datapath uses: Cilium's numbers, and
 * the names of septum.wellknown.reserved.ReservedIdentity (the one Python
 * definition), against which the loader checks them. */
enum septum_reserved_identity {
	SEPTUM_IDENTITY_UNKNOWN = 0, /* in policy keys: the "any peer" bucket */
	SEPTUM_IDENTITY_HOST = 1,
	SEPTUM_IDENTITY_WORLD = 2,   /* every address the ipcache does not know */
};

/* Bits of septum_flow_event.flags. */
enum septum_event_flag {
	SEPTUM_EVENT_F_AUDIT_MODE = 0x01, /* the endpoint was in audit mode */
	SEPTUM_EVENT_F_CT_CLOSE = 0x02,   /* the flow closed (FIN/RST) */
	SEPTUM_EVENT_F_RELATED = 0x04,    /* an ICMP error about a tracked connection */
	SEPTUM_EVENT_F_BENCH = 0x80,      /* emitted by bench_emit, not by a packet */
};

/* Bits of septum_endpoint.flags. */
enum septum_endpoint_flag {
	SEPTUM_EP_F_ENFORCE_INGRESS = 0x01,  /* a policy selects the pod for ingress */
	SEPTUM_EP_F_ENFORCE_EGRESS = 0x02,   /* ... for egress */
	SEPTUM_EP_F_AUDIT = 0x04,            /* would-be drops pass with verdict AUDIT */
	SEPTUM_EP_F_CHECK_SOURCE = 0x08,     /* drop egress from addresses the pod does not own */
	SEPTUM_EP_F_HAS_IPV4 = 0x10,
	SEPTUM_EP_F_HAS_IPV6 = 0x20,
	SEPTUM_EP_F_ANY_PEER_INGRESS = 0x40, /* the any-peer policy bucket exists for ingress */
	SEPTUM_EP_F_ANY_PEER_EGRESS = 0x80,  /* ... for egress (else its lookup is skipped) */
};

/* Bits of septum_endpoint.policy_flags: the endpoint's policy in this
 * direction has exact (peer, protocol, port) entries, so a new connection
 * tries its exact key before the bucket head and the common L3+L4 allow costs
 * one policy lookup instead of two (a bucket without that port still costs
 * two: the exact miss, then the head, whose HAS_EXACT lookup is not
 * repeated). */
enum septum_endpoint_policy_flag {
	SEPTUM_EP_POLICY_F_EXACT_FIRST_INGRESS = 0x01,
	SEPTUM_EP_POLICY_F_EXACT_FIRST_EGRESS = 0x02,
};

/* Bits of septum_policy_value.flags. */
enum septum_policy_flag {
	SEPTUM_POLICY_F_AUDIT = 0x01,     /* this entry's deny only audits */
	SEPTUM_POLICY_F_HAS_EXACT = 0x02, /* head: (id, proto, port) entries exist */
	SEPTUM_POLICY_F_HAS_PROTO = 0x04, /* head: (id, proto, any port) entries exist */
	SEPTUM_POLICY_F_HAS_RANGE = 0x08, /* head: port-range entries exist */
};

/* ICMP and ICMPv6 have types, not ports: a policy key's "port" for them is
 * the type with this bit set, so type 0 (IPv4 echo reply) is a key of its own
 * and 0 still means any type. */
enum septum_policy_port_flag {
	SEPTUM_POLICY_ICMP_TYPE = 0x100,
};

/* Bits of septum_config.flags. */
enum septum_config_flag {
	SEPTUM_CFG_F_REVOKE_ON_POLICY_CHANGE = 0x01, /* re-check established flows on a new revision */
	SEPTUM_CFG_F_BENCH_NEW_FLOWS = 0x02, /* benchmark only: vary the source port per run so
					      * every BPF_PROG_TEST_RUN repeat is a new connection
					      * (cold caches: a random conntrack slot each time) */
	SEPTUM_CFG_F_BENCH_FORCE_NEW = 0x04, /* benchmark only: ignore conntrack hits, so a
					      * repeated packet takes the new-connection path,
					      * insert included, on hot caches */
	SEPTUM_CFG_F_LOCAL_DELIVERY = 0x08,  /* a connection between two pods of this node
					      * skips the node's IP stack (lib/localdelivery.h);
					      * off: Cilium's "legacy host routing" */
};

/* skb->mark values of the L7 redirect (lib/proxy.h), in the 0x0F00 nibble
 * Cilium's proxy marks use too, so both read the same on a node.  TO_PROXY:
 * a packet the datapath hands to the node's proxy (policy routing delivers
 * it locally: fwmark TO_PROXY/MAGIC_MASK -> table SEPTUM_PROXY_ROUTE_TABLE,
 * "local default dev lo"); the proxy port rides in the upper 16 bits.
 * FROM_PROXY_*: set (SO_MARK) on the proxy's upstream sockets; the upper 16
 * bits carry the low 16 bits of the original source identity, the low byte
 * its bits 16-23.  A pod cannot forge either: a mark does not cross a veth
 * into another namespace. */
enum septum_proxy_mark {
	SEPTUM_MARK_MAGIC_MASK = 0x0F00,
	SEPTUM_MARK_TO_PROXY = 0x0200,
	SEPTUM_MARK_FROM_PROXY_INGRESS = 0x0A00, /* not redirected to a proxy again */
	SEPTUM_MARK_FROM_PROXY_EGRESS = 0x0B00,  /* may meet the server's ingress proxy */
	SEPTUM_MARK_DELIVERED = 0x0700, /* decided by local delivery, sent out of the
					 * destination's veth to resolve its neighbour:
					 * septum_to_pod lets it pass (lib/localdelivery.h) */
	SEPTUM_PROXY_ROUTE_TABLE = 2004,
};

/* How map keys are laid out beyond their fields (see the keys below). */
enum septum_key_layout {
	/* LPM prefixes count the 32 bits of family+pad first */
	SEPTUM_LPM_ADDR_PREFIX_FIXED = 32,
	/* policy range prefixes count endpoint .. pad first, then 0..16 port bits */
	SEPTUM_POLICY_RANGE_PREFIX_FIXED = 80,
	/* sep_ct4 keys hold the ifindex in this many bits, the protocol above */
	SEPTUM_CT4_IFINDEX_BITS = 24,
};

/* The per-CPU counters' dimensions: slots per direction, verdict and drop
 * reason (see SEPTUM_COUNTER_INDEX). */
enum septum_counter_slots {
	SEPTUM_DIRECTION_SLOTS = 3,
	SEPTUM_VERDICT_SLOTS = 8,
	SEPTUM_DROP_REASON_SLOTS = 256,
};

/* ---- flow event: the ring-buffer record ------------------------------- */

/* One fixed-size record per event (112 bytes, 8-byte aligned), so user space
 * decodes batches with one struct.iter_unpack.  Ports are HOST byte order.
 * time_ns is CLOCK_BOOTTIME (bpf_ktime_get_boot_ns). bytes/packets count
 * what this event covers: the packet itself, or for an aggregated flow every
 * packet of that flow direction since its previous event. */
struct septum_flow_event {
	__u64 time_ns;
	__u64 bytes;
	__u8 src_addr[16];
	__u8 dst_addr[16];
	__u32 src_identity;
	__u32 dst_identity;
	__u32 rule_id;          /* matched policy entry's rule id, 0 = none */
	__u32 ifindex;          /* interface the program ran on */
	__u32 packets;
	__u32 suppressed_drops; /* drops of this flow not reported since the last drop event */
	__u8 match_type;        /* enum septum_match_type */
	__u8 flags;             /* enum septum_event_flag bits */
	__u16 reserved;
	__u16 endpoint_id;
	__u16 src_port;
	__u16 dst_port;
	__u16 drop_reason;      /* enum septum_drop_reason */
	__u16 l7_proxy_port;    /* L7 redirect marker of the matched entry, 0 = none */
	__u8 event_type;        /* enum septum_event_type */
	__u8 verdict;           /* enum septum_verdict */
	__u8 direction;         /* enum septum_direction */
	__u8 is_reply;
	__u8 ip_version;        /* enum septum_ip_version */
	__u8 protocol;          /* IPPROTO_* */
	__u8 icmp_type;
	__u8 icmp_code;
	__u8 tcp_flags;         /* enum septum_tcp_flag bits of this packet */
	__u8 trace_point;       /* enum septum_trace_point */
	__u8 src_mac[6];        /* Ethernet source of the packet (zero when it had none) */
	__u8 dst_mac[6];        /* Ethernet destination */
	__u8 pad[4];            /* zero: keeps the record a multiple of 8 bytes */
};

/* ---- map keys and values ---------------------------------------------- */

/* ipcache: exact host addresses (/32, /128: most pods) live in a hash, CIDRs
 * in an LPM trie; the datapath tries the hash first, which is exactly
 * longest-prefix semantics since a host route is the longest prefix.
 * Unknown addresses resolve to SEPTUM_IDENTITY_WORLD. */
struct septum_host_key {
	__u8 family; /* enum septum_ip_version */
	__u8 pad[3];
	__u8 addr[16];
};

/* LPM key over an address: ipcache CIDRs and the XDP prefilter.  prefixlen counts
 * the 32 bits of family+pad first, so a /24 IPv4 prefix is 32 + 24. */
struct septum_lpm_addr_key {
	__u32 prefixlen;
	__u8 family; /* enum septum_ip_version: v4 and v6 share one trie */
	__u8 pad[3];
	__u8 addr[16];
};

struct septum_ipcache_value {
	__u32 identity;
	__u32 flags; /* reserved, 0 */
};

/* sep_local_addrs: an address of a pod of this node -> its host-side veth. */
struct septum_local_addr {
	__u32 ifindex;
	__u8 mac[6]; /* the host veth's: a delivered frame's source (lib/localdelivery.h) */
	__u8 pad[2];
};

struct septum_prefilter_value {
	__u32 rule_id; /* reported in the drop event */
	__u32 flags;   /* reserved, 0 */
};

/* Endpoint map: ifindex of the host-side veth -> the pod behind it. */
struct septum_endpoint_key {
	__u32 ifindex;
};

/* The whole value is replaced in one update (the map is a non-preallocated
 * hash, so readers see the old or the new element, never a mix): that is how
 * a new policy generation, its enforcement flags and audit mode switch
 * atomically. */
struct septum_endpoint {
	__u32 identity;
	__u32 policy_revision;  /* bumped on every policy change, copied into CT entries */
	__u16 endpoint_id;
	__u8 flags;             /* enum septum_endpoint_flag bits */
	__u8 policy_generation; /* 0/1: which generation of policy keys is live */
	__u8 ipv4[4];
	__u8 ipv6[16];
	__u8 policy_flags;      /* enum septum_endpoint_policy_flag bits: how lookups start */
	__u8 pad[3];
};

/* Policy: a HASH of exact keys plus an LPM trie for port ranges only.
 *
 * Hash keys per (endpoint, generation, direction, peer identity) "bucket":
 *   (id, proto 0, port 0)      the bucket head: its own action is the L3-only
 *                              entry (or NONE), its flags say which of the
 *                              other lookups can match, so a miss costs one
 *                              lookup and a default deny costs two;
 *   (id, proto, port 0)        protocol, any port;
 *   (id, proto, port)          protocol + exact port (ICMP: port = ICMP type).
 * peer_identity 0 is the "any peer" bucket, looked up when the peer's own
 * bucket gives no answer.  Deny beats allow because user space resolves it
 * when encoding (an allow covered by a deny becomes that deny, and every
 * any-peer deny is copied into each peer bucket), so the datapath can stop at
 * the most specific hit.  The generation byte lets user space write a whole
 * new policy beside the live one and switch with one endpoint update. */
struct septum_policy_key {
	__u16 endpoint_id;
	__u8 generation;
	__u8 direction;     /* enum septum_direction */
	__u32 peer_identity;
	__u8 protocol;      /* IPPROTO_*, 0 = any */
	__u8 pad;
	__u16 dport_be;     /* 0 = any; ICMP/ICMPv6: SEPTUM_POLICY_ICMP_TYPE | type */
};

/* Port ranges: LPM over the same fields; prefixlen covers the first 64 bits
 * (endpoint .. peer identity) + 16 (protocol, pad) + the port prefix, so a
 * range is a handful of prefixes.  Looked up only when the bucket head says
 * SEPTUM_POLICY_F_HAS_RANGE. */
struct septum_policy_range_key {
	__u32 prefixlen;
	__u16 endpoint_id;
	__u8 generation;
	__u8 direction;
	__u32 peer_identity;
	__u8 protocol;
	__u8 pad;
	__u16 dport_be;
};

struct septum_policy_value {
	__u32 rule_id;
	__u16 l7_proxy_port; /* nonzero: redirect to the L7 proxy on this port (lib/proxy.h) */
	__u8 action;         /* enum septum_policy_action; 0 on a head without an L3 entry */
	__u8 flags;          /* enum septum_policy_flag bits */
	__u8 match_type;     /* enum septum_match_type, computed by user space */
	__u8 pad[3];
};

/* IPv6 conntrack key (sep_ct6): the flow in canonical order, the (address, port) side that
 * compares lower first, so both directions of a connection find the same entry
 * with ONE lookup; scoped to the endpoint's interface, so pod A's entries never
 * answer for pod B on the same node.  Keyed by ifindex, not endpoint id, so
 * that an established packet needs no endpoint lookup at all.  Which side
 * opened the connection, and in which direction, is in the entry
 * (orig_direction, orig_swapped).  Ports are network order; for ICMP echo both
 * ports hold the echo identifier. */
struct septum_ct_key {
	__u8 src_addr[16];
	__u8 dst_addr[16];
	__u16 sport_be;
	__u16 dport_be;
	__u32 ifindex;   /* host-side veth of the endpoint */
	__u8 protocol;
	__u8 direction;  /* always 0 (the entry holds the first packet's direction) */
	__u8 ip_version;
	__u8 pad;
};

/* IPv4 conntrack key (sep_ct4): the same flow identity in 16 bytes instead of
 * 44, so the lookup every established packet makes hashes and compares four
 * words instead of eleven.  The protocol rides in the top byte of the
 * interface index: interfaces whose ifindex does not fit 24 bits (16 million
 * interfaces created in the node's namespace) keep their IPv4 flows in
 * sep_ct6 instead, under the full key with ip_version 4.  Canonical order as
 * above: the (address, port) side that compares lower (addresses and ports
 * compared as loaded, in network byte order) first. */
struct septum_ct4_key {
	__u8 src_addr[4];
	__u8 dst_addr[4];
	__u16 sport_be;
	__u16 dport_be;
	__u32 ifindex_protocol; /* ifindex | protocol << 24 */
};

#define SEPTUM_CT4_IFINDEX_MASK ((1U << SEPTUM_CT4_IFINDEX_BITS) - 1)

/* Bits of septum_ct_entry.flags. */
enum septum_ct_flag {
	SEPTUM_CT_F_REPLY_SEEN = 0x01, /* a reply went through (its first one is reported) */
	SEPTUM_CT_F_LOCAL = 0x02,      /* both ends are pods of this node and the connection
					* skips the node's stack between them, both ways
					* (lib/localdelivery.h) */
};

enum septum_ct_state {
	SEPTUM_CT_NEW = 0,         /* non-TCP, or TCP before the handshake finished */
	SEPTUM_CT_SYN_SENT = 1,
	SEPTUM_CT_ESTABLISHED = 2,
	SEPTUM_CT_CLOSING = 3,     /* FIN or RST seen */
};

struct septum_ct_entry {
	__u64 expires;           /* deadline in jiffies (bpf_jiffies64) */
	__u64 fwd_bytes;         /* since the last forward-direction event */
	__u64 rev_bytes;         /* since the last reply-direction event */
	__u32 fwd_packets;
	__u32 rev_packets;
	__u32 rule_id;           /* entry that allowed the connection */
	__u32 policy_revision;   /* endpoint revision when the connection was allowed */
	__u32 peer_identity;
	__u16 l7_proxy_port;
	__u8 verdict;            /* FORWARDED or AUDIT (replayed on every event), DROPPED once revoked */
	__u8 match_type;
	__u8 state;              /* enum septum_ct_state */
	__u8 fwd_flags_seen;     /* TCP flags seen, per direction (event on change) */
	__u8 rev_flags_seen;
	__u8 flags;              /* enum septum_ct_flag bits */
	__u16 drop_reason;       /* revoked (verdict DROPPED): every packet of the flow drops with it */
	__u8 orig_direction;     /* enum septum_direction of the connection's first packet */
	__u8 orig_swapped;       /* 1: the first packet's source is the key's dst side */
};

/* Fragment tracking (IPv4 and IPv6): the first fragment records its ports so
 * later fragments of the same datagram get the same tuple, hence the same
 * conntrack/policy verdict. */
struct septum_frag_key {
	__u8 src_addr[16];
	__u8 dst_addr[16];
	__u32 id;
	__u8 protocol; /* IPv4: the protocol; IPv6: 0 (see fragments.h) */
	__u8 ip_version;
	__u16 pad;
};

struct septum_frag_value {
	__u16 sport_be;
	__u16 dport_be;
	__u8 protocol; /* the first fragment's L4 protocol */
	__u8 pad[3];
};

/* Drop-event rate limit, per flow and reason. */
struct septum_drop_key {
	/* 64-bit hash of the tuple as the dropped packet had it (addresses, ports,
	 * protocol, IP version): a 16-byte key looks up ~15 ns faster than the
	 * whole tuple.  Two flows whose hashes collide share one rate limit,
	 * which only merges their drop events; drops themselves are unaffected. */
	__u64 flow_hash;
	__u32 ifindex;
	__u8 direction;
	__u8 pad;
	__u16 drop_reason;
};

struct septum_drop_value {
	__u64 last_event; /* jiffies (bpf_jiffies64) */
	__u32 suppressed; /* drops since last_event, reported in the next event */
	__u32 pad;
};

/* Per-CPU counters: PERCPU_ARRAY indexed by SEPTUM_COUNTER_INDEX. */
struct septum_counter {
	__u64 packets;
	__u64 bytes;
};
#define SEPTUM_COUNTER_INDEX(direction, verdict, reason)                                  \
	((((__u32)(direction) * SEPTUM_VERDICT_SLOTS) + (__u32)(verdict)) *                \
		 SEPTUM_DROP_REASON_SLOTS +                                                 \
	 ((__u32)(reason) & (SEPTUM_DROP_REASON_SLOTS - 1)))
#define SEPTUM_COUNTER_ENTRIES \
	(SEPTUM_DIRECTION_SLOTS * SEPTUM_VERDICT_SLOTS * SEPTUM_DROP_REASON_SLOTS)

/* Node configuration: ARRAY of one entry, written by the agent after load. */
struct septum_config {
	__u32 ct_timeout_tcp_syn_s;
	__u32 ct_timeout_tcp_established_s;
	__u32 ct_timeout_tcp_close_s;
	__u32 ct_timeout_other_s;
	__u32 drop_event_interval_ms; /* at most one drop event per flow+reason per interval */
	__u32 flags;                  /* enum septum_config_flag bits */
	__u32 kernel_hz;              /* the kernel's HZ: per-packet time is bpf_jiffies64 */
};

/* Lost events: PERCPU_ARRAY of one __u64, bumped when bpf_ringbuf_reserve fails. */

/* ---- every enum above, for BTF ------------------------------------------ */

/* BTF records an enum only when something in the object uses its type, and
 * the map fields that hold these values are __u8/__u16/__u32.  One member per
 * enum, each typed as its enum: lib/abi_anchor.h defines one (unused) variable
 * of this struct so that every enum reaches the object's BTF, where the
 * loader checks the Python mirrors (septum.dataplane.abi.ENUM_MIRRORS). */
struct septum_abi_enums {
	enum septum_abi_version abi_version;
	enum septum_verdict verdict;
	enum septum_direction direction;
	enum septum_drop_reason drop_reason;
	enum septum_event_type event_type;
	enum septum_trace_point trace_point;
	enum septum_match_type match_type;
	enum septum_policy_action policy_action;
	enum septum_ip_version ip_version;
	enum septum_tcp_flag tcp_flag;
	enum septum_reserved_identity reserved_identity;
	enum septum_event_flag event_flag;
	enum septum_endpoint_flag endpoint_flag;
	enum septum_endpoint_policy_flag endpoint_policy_flag;
	enum septum_policy_flag policy_flag;
	enum septum_policy_port_flag policy_port_flag;
	enum septum_config_flag config_flag;
	enum septum_key_layout key_layout;
	enum septum_counter_slots counter_slots;
	enum septum_ct_state ct_state;
	enum septum_ct_flag ct_flag;
	enum septum_proxy_mark proxy_mark;
};

/* ---- sizes the Python mirror relies on ------------------------------- */
#define SEPTUM_ASSERT_SIZE(type, size) _Static_assert(sizeof(type) == (size), #type " size")
SEPTUM_ASSERT_SIZE(struct septum_flow_event, 112);
SEPTUM_ASSERT_SIZE(struct septum_lpm_addr_key, 24);
SEPTUM_ASSERT_SIZE(struct septum_ipcache_value, 8);
SEPTUM_ASSERT_SIZE(struct septum_prefilter_value, 8);
SEPTUM_ASSERT_SIZE(struct septum_local_addr, 12);
SEPTUM_ASSERT_SIZE(struct septum_endpoint_key, 4);
SEPTUM_ASSERT_SIZE(struct septum_endpoint, 36);
SEPTUM_ASSERT_SIZE(struct septum_host_key, 20);
SEPTUM_ASSERT_SIZE(struct septum_policy_key, 12);
SEPTUM_ASSERT_SIZE(struct septum_policy_range_key, 16);
SEPTUM_ASSERT_SIZE(struct septum_policy_value, 12);
SEPTUM_ASSERT_SIZE(struct septum_ct_key, 44);
SEPTUM_ASSERT_SIZE(struct septum_ct4_key, 16);
SEPTUM_ASSERT_SIZE(struct septum_ct_entry, 56);
SEPTUM_ASSERT_SIZE(struct septum_frag_key, 40);
SEPTUM_ASSERT_SIZE(struct septum_frag_value, 8);
SEPTUM_ASSERT_SIZE(struct septum_drop_key, 16);
SEPTUM_ASSERT_SIZE(struct septum_drop_value, 16);
SEPTUM_ASSERT_SIZE(struct septum_counter, 16);
SEPTUM_ASSERT_SIZE(struct septum_config, 28);
_Static_assert(__builtin_offsetof(struct septum_flow_event, match_type) == 72, "event layout");
_Static_assert(__builtin_offsetof(struct septum_flow_event, trace_point) == 95, "event layout");
_Static_assert(__builtin_offsetof(struct septum_flow_event, src_mac) == 96, "event layout");
_Static_assert(__builtin_offsetof(struct septum_flow_event, dst_mac) == 102, "event layout");
_Static_assert(SEPTUM_DROP_PREFILTER_DENIED < SEPTUM_DROP_REASON_SLOTS, "reasons fit a byte");
_Static_assert(SEPTUM_VERDICT_AUDIT < SEPTUM_VERDICT_SLOTS, "verdicts fit their slots");
_Static_assert(SEPTUM_DIR_EGRESS < SEPTUM_DIRECTION_SLOTS, "directions fit their slots");

#endif /* SEPTUM_ABI_H */
