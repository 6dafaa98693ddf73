import { describe, expect, it } from "vitest";
import { FlowBuffer } from "./buffer";
import { DropReason } from "../gen/septum/dataplane/observe/api/flow/flow_pb";
import { dropReasonText, exportLine, toRow, why } from "./flows";
import { landing, response, toWorld } from "./fixtures";

describe("flow rows and the reason for a verdict", () => {
  it("rows carry Hubble UI's columns", () => {
    const row = toRow(1, landing("xwing"));
    expect([row.source, row.destination, row.dstPort, row.verdict]).toEqual([
      "default/xwing", "default/deathstar-abc", "80/TCP", "DROPPED",
    ]);
    expect(toRow(2, toWorld()).destination).toBe("world (192.0.2.7)");
  });

  it("a POLICY_DENIED drop is the default deny of the policy that isolates the pod", () => {
    const w = why(landing("xwing"));
    expect(w.defaultDeny).toBe(true);
    expect(w.summary).toBe("Default deny on ingress: isolated by CiliumNetworkPolicy default/rule1, no rule allows this traffic");
    expect(w.policies[0]).toMatchObject({ direction: "ingress", effect: "denied", tier: "namespace" });
  });

  it("an allowed flow names the allowing policy", () => {
    expect(why(landing("tiefighter")).summary).toBe("Allowed by CiliumNetworkPolicy default/rule1");
  });

  it("export is hubble observe -o json: proto field names, enum names", () => {
    const line = JSON.parse(exportLine(response(landing("xwing"))));
    expect(line.node_name).toBe("node-1");
    expect(line.flow.verdict).toBe("DROPPED");
    expect(line.flow.drop_reason_desc).toBe("POLICY_DENIED");
    expect(line.flow.IP.source).toBe("10.0.0.3");
    expect(line.flow.l4.TCP.destination_port).toBe(80);
    expect(line.flow.source.pod_name).toBe("xwing");
    expect(line.flow.ingress_denied_by[0]).toMatchObject({ name: "rule1", revision: "3" });
  });

  it("the buffer keeps the newest flows within its capacity", () => {
    const b = new FlowBuffer(3);
    const evicted = b.push([1, 2, 3, 4, 5].map((i) => response(landing("tiefighter", i * 1000))));
    expect(evicted).toBe(2);
    expect(b.length).toBe(3);
    expect(b.rowNewestFirst(0).timeMs).toBe(5000);
    expect(b.allResponses().map((r) => Number(r.time?.seconds))).toEqual([3, 4, 5]);
  });

  it("a drop reason is shown with what it means", () => {
    expect(dropReasonText(DropReason.POLICY_DENIED, 133)).toBe("POLICY_DENIED (133): policy denied: no rule allowed it");
    expect(dropReasonText(DropReason.POLICY_DENY, 181)).toContain("explicit deny rule");
    expect(dropReasonText(DropReason.STALE_OR_UNROUTABLE_IP, 132)).toBe("STALE_OR_UNROUTABLE_IP (132): stale or unroutable ip");
  });
});
