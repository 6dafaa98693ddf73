// What the views show of a Flow, as pure functions of the Flow message: names, the
// destination port, L7 info, the verdict, and *why* (the deciding policy). Also the export
// in Hubble's JSON lines format (`hubble observe -o json`: one protojson GetFlowsResponse per
// line with the proto field names).
import { toJson, type JsonValue } from "@bufbuild/protobuf";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import {
  DropReason,
  TrafficDirection,
  Verdict,
  type Endpoint,
  type Flow,
  type Policy,
} from "../gen/septum/dataplane/observe/api/flow/flow_pb";
import {
  GetFlowsResponseSchema,
  type GetFlowsResponse,
} from "../gen/septum/dataplane/observe/api/observer/observer_pb";

export function verdictName(v: Verdict): string {
  return Verdict[v] ?? String(v);
}

export function dropReasonName(r: DropReason): string {
  return DropReason[r] ?? String(r);
}

// What a drop reason means, for the reasons Septum's datapath reports (by the Hubble number it
// reports each as, abi.HUBBLE_DROP_REASON_NAME); any other: its name in words.
const DROP_REASON_TEXT: Partial<Record<DropReason, string>> = {
  [DropReason.POLICY_DENIED]: "policy denied: no rule allowed it",
  [DropReason.POLICY_DENY]: "policy deny: an explicit deny rule matched",
  [DropReason.INVALID_SOURCE_IP]: "source address is not one of the pod's addresses",
  [DropReason.INVALID_PACKET_DROPPED]: "invalid packet",
  [DropReason.NO_MATCHING_LOCAL_CONTAINER_FOUND]: "no local endpoint for this interface",
  [DropReason.CT_MAP_INSERTION_FAILED]: "connection tracking table insertion failed",
  [DropReason.FIRST_LOGICAL_DATAGRAM_FRAGMENT_NOT_FOUND]: "a fragment whose first fragment was not seen",
  [DropReason.SOCKET_LOOKUP_FAILED]: "L7 redirect: no proxy is listening (fails closed)",
  [DropReason.SOCKET_ASSIGN_FAILED]: "L7 redirect: the packet could not be given to the proxy",
};

/** The drop reason as the flow detail shows it: name, number and what it means. */
export function dropReasonText(r: DropReason, code: number): string {
  const meaning = DROP_REASON_TEXT[r] ?? dropReasonName(r).toLowerCase().replaceAll("_", " ");
  return `${dropReasonName(r)} (${code}): ${meaning}`;
}

const RESERVED_PREFIX = "reserved:";

/** A reserved identity's name (world, host, remote-node, ...) when the endpoint is one. */
export function reservedName(ep: Endpoint | undefined): string | undefined {
  if (!ep || ep.podName) return undefined;
  const label = ep.labels.find((l) => l.startsWith(RESERVED_PREFIX));
  return label ? label.slice(RESERVED_PREFIX.length) : undefined;
}

/** The workload a pod belongs to (its first workload, else its app label, else the pod). */
export function workloadName(ep: Endpoint): string {
  if (ep.workloads.length) return ep.workloads[0].name;
  for (const key of ["k8s:app.kubernetes.io/name=", "k8s:app=", "k8s:class="]) {
    const label = ep.labels.find((l) => l.startsWith(key));
    if (label) return label.slice(key.length);
  }
  return ep.podName;
}

/** The name the table shows: namespace/pod, a reserved identity, or the IP. */
export function endpointLabel(ep: Endpoint | undefined, ip: string): string {
  if (ep?.podName) return `${ep.namespace}/${ep.podName}`;
  const reserved = reservedName(ep);
  if (reserved) return ip ? `${reserved} (${ip})` : reserved;
  return ip || (ep ? `identity ${ep.identity}` : "unknown");
}

export function sourceLabel(f: Flow): string {
  return endpointLabel(f.source, f.IP?.source ?? "");
}

export function destinationLabel(f: Flow): string {
  return endpointLabel(f.destination, f.IP?.destination ?? "");
}

export interface L4Info {
  protocol: string;
  srcPort?: number;
  dstPort?: number;
}

export function l4(f: Flow): L4Info {
  const p = f.l4?.protocol;
  switch (p?.case) {
    case "TCP": return { protocol: "TCP", srcPort: p.value.sourcePort, dstPort: p.value.destinationPort };
    case "UDP": return { protocol: "UDP", srcPort: p.value.sourcePort, dstPort: p.value.destinationPort };
    case "SCTP": return { protocol: "SCTP", srcPort: p.value.sourcePort, dstPort: p.value.destinationPort };
    case "ICMPv4": return { protocol: "ICMPv4" };
    case "ICMPv6": return { protocol: "ICMPv6" };
    default: return { protocol: "" };
  }
}

export function tcpFlags(f: Flow): string[] {
  const p = f.l4?.protocol;
  if (p?.case !== "TCP" || !p.value.flags) return [];
  const flags = p.value.flags;
  return (["SYN", "ACK", "FIN", "RST", "PSH", "URG", "ECE", "CWR", "NS"] as const).filter((k) => flags[k]);
}

/** Hubble UI's "L7 info" column: HTTP method, URL and status, or the DNS query. */
export function l7Info(f: Flow): string {
  const rec = f.l7?.record;
  if (rec?.case === "http") {
    const h = rec.value;
    return [h.method, h.url, h.code ? String(h.code) : ""].filter(Boolean).join(" ");
  }
  if (rec?.case === "dns") {
    const d = rec.value;
    return `DNS ${d.qtypes.join(",")} ${d.query}${d.rcode ? ` rcode ${d.rcode}` : ""}`.trim();
  }
  return "";
}

export function flowTimeMs(f: Flow): number {
  return f.time ? timestampMs(f.time) : 0;
}

/** One row of the flow table, computed once per flow. */
export interface FlowRow {
  key: number;
  flow: Flow;
  timeMs: number;
  source: string;
  destination: string;
  dstPort: string;
  l7: string;
  verdict: string;
}

export function toRow(key: number, f: Flow): FlowRow {
  const info = l4(f);
  return {
    key,
    flow: f,
    timeMs: flowTimeMs(f),
    source: sourceLabel(f),
    destination: destinationLabel(f),
    dstPort: info.dstPort !== undefined ? `${info.dstPort}/${info.protocol}` : info.protocol,
    l7: l7Info(f),
    verdict: verdictName(f.verdict),
  };
}

/** Why a flow got its verdict, as the flow carries it. */
export interface Why {
  summary: string;
  policies: { direction: string; effect: "allowed" | "denied"; policy: Policy; tier: string }[];
  defaultDeny: boolean;
}

/** The tier a policy sits in, from its kind (admin/baseline tiers come before namespaced ones). */
export function policyTier(p: Policy): string {
  const tierLabel = p.labels.find((l) => l.includes("policy.tier="));
  if (tierLabel) return tierLabel.split("=").slice(1).join("=");
  switch (p.kind) {
    case "ClusterNetworkPolicy": return "cluster (admin/baseline)";
    case "AdminNetworkPolicy": return "admin";
    case "BaselineAdminNetworkPolicy": return "baseline";
    case "CiliumClusterwideNetworkPolicy": return "cluster-wide";
    default: return "namespace";
  }
}

export function why(f: Flow): Why {
  const policies: Why["policies"] = [];
  const add = (list: Policy[], direction: string, effect: "allowed" | "denied") => {
    for (const policy of list) policies.push({ direction, effect, policy, tier: policyTier(policy) });
  };
  add(f.ingressDeniedBy, "ingress", "denied");
  add(f.egressDeniedBy, "egress", "denied");
  add(f.ingressAllowedBy, "ingress", "allowed");
  add(f.egressAllowedBy, "egress", "allowed");
  const dir = f.trafficDirection === TrafficDirection.INGRESS ? "ingress" : f.trafficDirection === TrafficDirection.EGRESS ? "egress" : "";
  // POLICY_DENIED is the default deny (the endpoint is isolated and no rule allows);
  // POLICY_DENY is an explicit deny rule.
  const defaultDeny = f.verdict !== Verdict.FORWARDED && f.dropReasonDesc === DropReason.POLICY_DENIED;
  let summary: string;
  const names = (effect: string) =>
    policies.filter((p) => p.effect === effect).map((p) => policyRef(p.policy)).join(", ");
  if (f.verdict === Verdict.FORWARDED) {
    summary = names("allowed")
      ? `Allowed by ${names("allowed")}`
      : "Forwarded: no policy selects this traffic (allow by default), or a reply of an allowed connection";
  } else if (defaultDeny) {
    summary = `Default deny on ${dir || "the endpoint"}: ${names("denied") ? `isolated by ${names("denied")}, ` : ""}no rule allows this traffic`;
  } else if (f.dropReasonDesc === DropReason.POLICY_DENY) {
    summary = `Denied by a deny rule${names("denied") ? ` of ${names("denied")}` : ""}`;
  } else if (f.verdict === Verdict.AUDIT) {
    summary = `Audit: would be denied${names("denied") ? ` by ${names("denied")}` : ""}`;
  } else {
    summary = `${verdictName(f.verdict)}: ${dropReasonName(f.dropReasonDesc)}`;
  }
  return { summary, policies, defaultDeny };
}

export function policyRef(p: Policy): string {
  return `${p.kind || "policy"} ${p.namespace ? `${p.namespace}/` : ""}${p.name}`;
}

/** A response as one line of `hubble observe -o json`. */
export function exportLine(resp: GetFlowsResponse): string {
  return JSON.stringify(toJson(GetFlowsResponseSchema, resp, { useProtoFieldName: true }) as JsonValue);
}

export function exportLines(responses: Iterable<GetFlowsResponse>): string {
  let out = "";
  for (const r of responses) out += exportLine(r) + "\n";
  return out;
}
