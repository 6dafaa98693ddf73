// Flows for the unit tests, built with the generated schemas (the wire types themselves).
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import {
  DropReason,
  FlowSchema,
  TrafficDirection,
  Verdict,
  type Flow,
} from "../gen/septum/dataplane/observe/api/flow/flow_pb";
import { GetFlowsResponseSchema } from "../gen/septum/dataplane/observe/api/observer/observer_pb";

export function pod(ns: string, name: string, workload: string, labels: string[]) {
  return { namespace: ns, podName: name, labels, workloads: [{ name: workload, kind: "Deployment" }], identity: 1000 };
}

export function landing(ship: "tiefighter" | "xwing", ms = 1_700_000_000_000): Flow {
  const allowed = ship === "tiefighter";
  const policy = { name: "rule1", namespace: "default", kind: "CiliumNetworkPolicy", revision: 3n, labels: [] };
  return create(FlowSchema, {
    time: timestampFromMs(ms),
    verdict: allowed ? Verdict.FORWARDED : Verdict.DROPPED,
    dropReason: allowed ? 0 : 133,
    dropReasonDesc: allowed ? DropReason.DROP_REASON_UNKNOWN : DropReason.POLICY_DENIED,
    IP: { source: allowed ? "10.0.0.2" : "10.0.0.3", destination: "10.0.0.1", ipVersion: 1 },
    l4: { protocol: { case: "TCP", value: { sourcePort: 40000, destinationPort: 80, flags: { SYN: true } } } },
    source: pod("default", ship, ship, [`k8s:class=${ship}`]),
    destination: pod("default", "deathstar-abc", "deathstar", ["k8s:class=deathstar"]),
    trafficDirection: TrafficDirection.INGRESS,
    nodeName: "node-1",
    ingressAllowedBy: allowed ? [policy] : [],
    ingressDeniedBy: allowed ? [] : [policy],
  });
}

export function toWorld(): Flow {
  return create(FlowSchema, {
    time: timestampFromMs(1_700_000_000_000),
    verdict: Verdict.FORWARDED,
    IP: { source: "10.0.0.2", destination: "192.0.2.7", ipVersion: 1 },
    l4: { protocol: { case: "UDP", value: { sourcePort: 5353, destinationPort: 53 } } },
    source: pod("default", "tiefighter", "tiefighter", []),
    destination: { identity: 2, labels: ["reserved:world"] },
    trafficDirection: TrafficDirection.EGRESS,
  });
}

export function response(flow: Flow) {
  return create(GetFlowsResponseSchema, { nodeName: "node-1", time: flow.time, responseTypes: { case: "flow", value: flow } });
}
