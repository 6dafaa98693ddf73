// The rule that decides a flow's connection as the policies are now: the Flow names the
// deciding policy but carries no rule, so the flow detail asks septum.ui.v1's Explain for the
// flow's source pod, destination pod and port, and shows the answer for the flow's direction.
// The answer is today's policies, not those the flow met: where it disagrees with the flow,
// the detail says so.
import { TrafficDirection, Verdict, type Flow } from "../gen/septum/dataplane/observe/api/flow/flow_pb";
import type { DirectionVerdict, ExplainResponse } from "../gen/septum/ui/api/v1/policy_pb";
import { l4, policyRef, why } from "./flows";

export interface ExplainArgs {
  source: string; // "ns/pod"
  destination: string;
  port: number;
  protocol: string;
}

/** What to ask Explain about the flow's connection, or undefined when it cannot be asked
 * (an end that is not a pod, or no destination port: ICMP, a bare IP). */
export function explainArgs(f: Flow): ExplainArgs | undefined {
  const info = l4(f);
  if (!f.source?.podName || !f.destination?.podName || info.dstPort === undefined) return undefined;
  return {
    source: `${f.source.namespace}/${f.source.podName}`,
    destination: `${f.destination.namespace}/${f.destination.podName}`,
    port: info.dstPort,
    protocol: info.protocol || "TCP",
  };
}

export interface RuleNow {
  direction: string;
  verdict: string; // "allowed", "denied", "audit"
  tier: string;
  policy: string;
  reason: string; // the engine's sentence: the rule, or default deny
  /** Where today's answer and the flow disagree (verdict or deciding policy), else "". */
  differs: string;
}

function verdictOf(d: DirectionVerdict): string {
  return d.audit ? "audit" : d.allowed ? "allowed" : "denied";
}

// "Kind ns/name" -> "ns/name": the flow and the engine may spell a kind differently.
const nameOf = (ref: string) => ref.slice(ref.lastIndexOf(" ") + 1);

/** The deciding rule(s) for the flow's direction (both enforced directions when the flow
 * has none), each with what differs from the flow. */
export function ruleNow(f: Flow, r: ExplainResponse): RuleNow[] {
  const dir = f.trafficDirection === TrafficDirection.INGRESS ? "ingress" : f.trafficDirection === TrafficDirection.EGRESS ? "egress" : "";
  const picked = r.directions.filter((d) => d.enforced && (!dir || d.direction === dir));
  const seen = why(f);
  const flowAllowed = f.verdict === Verdict.FORWARDED;
  return picked.map((d) => {
    const notes: string[] = [];
    if (d.allowed !== flowAllowed && !(d.audit && f.verdict === Verdict.AUDIT)) {
      notes.push(`the flow was ${flowAllowed ? "allowed" : "denied"}; the policies now ${d.allowed ? "allow" : "deny"} it`);
    }
    const flowPolicies = seen.policies.filter((p) => p.direction === d.direction).map((p) => nameOf(policyRef(p.policy)));
    if (d.policy && flowPolicies.length && !flowPolicies.includes(nameOf(d.policy))) {
      notes.push(`the flow names ${flowPolicies.join(", ")}, not ${nameOf(d.policy)}`);
    }
    return { direction: d.direction, verdict: verdictOf(d), tier: d.tier, policy: d.policy, reason: d.reason, differs: notes.join("; ") };
  });
}
