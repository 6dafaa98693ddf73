import { describe, expect, it } from "vitest";
import { create } from "@bufbuild/protobuf";
import { ExplainResponseSchema } from "../gen/septum/ui/api/v1/policy_pb";
import { landing, toWorld } from "./fixtures";
import { explainArgs, ruleNow } from "./rulenow";

const DEFAULT_DENY = "default deny: CiliumNetworkPolicy default/rule1 selects the pod for ingress and no rule allows this";

function answer(allowed: boolean, policy = "CiliumNetworkPolicy default/rule1", reason = DEFAULT_DENY) {
  return create(ExplainResponseSchema, {
    allowed,
    directions: [
      { direction: "egress", enforced: false, allowed: true },
      { direction: "ingress", enforced: true, allowed, tier: "NORMAL", policy, reason },
    ],
  });
}

describe("the deciding rule as the policies are now", () => {
  it("asks about the flow's pods and destination port, and nothing when an end is not a pod", () => {
    expect(explainArgs(landing("xwing"))).toEqual({ source: "default/xwing", destination: "default/deathstar-abc", port: 80, protocol: "TCP" });
    expect(explainArgs(toWorld())).toBeUndefined();
  });

  it("shows the flow's direction's rule; agreeing with the flow, nothing differs", () => {
    const [r, ...rest] = ruleNow(landing("xwing"), answer(false));
    expect(rest).toEqual([]);
    expect(r).toEqual({ direction: "ingress", verdict: "denied", tier: "NORMAL", policy: "CiliumNetworkPolicy default/rule1", reason: DEFAULT_DENY, differs: "" });
  });

  it("says where the policies now disagree with the flow: verdict and deciding policy", () => {
    const [r] = ruleNow(landing("xwing"), answer(true, "SeptumNetworkPolicy default/alliance", "allowed by rule 0 of default/alliance"));
    expect(r.verdict).toBe("allowed");
    expect(r.differs).toBe("the flow was denied; the policies now allow it; the flow names default/rule1, not default/alliance");
  });
});
