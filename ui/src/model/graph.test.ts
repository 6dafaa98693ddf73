import { describe, expect, it } from "vitest";
import { create } from "@bufbuild/protobuf";
import { EndpointSchema, FlowSchema, ServiceSchema } from "../gen/septum/dataplane/observe/api/flow/flow_pb";
import { edgeVerdict, RATE_WINDOW_MS, rateNow, ServiceGraph, visible } from "./graph";
import { landing, toWorld } from "./fixtures";

describe("the service map's graph", () => {
  const g = new ServiceGraph();
  g.add(landing("tiefighter"));
  g.add(landing("xwing"));
  g.add(toWorld());

  it("workloads are nodes by namespace, world is its own node", () => {
    expect([...g.nodes.keys()].sort()).toEqual(["default/deathstar", "default/tiefighter", "default/xwing", "reserved:world"]);
    expect(g.nodes.get("reserved:world")).toMatchObject({ reserved: true, namespace: "" });
  });

  it("edges carry ports and verdict colours", () => {
    const x = g.edges.get("default/xwing->default/deathstar")!;
    expect([...x.ports]).toEqual(["80/TCP"]);
    expect(edgeVerdict(x)).toBe("dropped");
    expect(edgeVerdict(g.edges.get("default/tiefighter->default/deathstar")!)).toBe("forwarded");
    const mixed = new ServiceGraph();
    mixed.add(landing("xwing"));
    const allowed = landing("xwing");
    allowed.verdict = 1;
    mixed.add(allowed);
    expect(edgeVerdict([...mixed.edges.values()][0])).toBe("mixed");
  });

  it("a flow to a Service frontend draws the Service in its namespace", () => {
    const svc = new ServiceGraph();
    const f = toWorld();
    f.destination = create(EndpointSchema, { identity: 9 });
    f.destinationService = create(ServiceSchema, { name: "deathstar", namespace: "default" });
    svc.add(f);
    expect(svc.nodes.get("svc:default/deathstar")).toMatchObject({ namespace: "default", name: "service deathstar" });
  });

  it("replies do not draw edges backwards", () => {
    const r = new ServiceGraph();
    r.add(create(FlowSchema, { ...landing("tiefighter"), isReply: true }));
    expect(r.edges.size).toBe(0);
  });

  it("filters by namespace, label, verdict and protocol", () => {
    const all = { namespaces: new Set<string>(), label: "", verdicts: new Set<never>(), protocol: "" };
    expect(visible(g, all).edges).toHaveLength(3);
    expect(visible(g, { ...all, verdicts: new Set(["dropped" as const]) }).edges.map((e) => e.source)).toEqual(["default/xwing"]);
    expect(visible(g, { ...all, protocol: "UDP" }).edges.map((e) => e.target)).toEqual(["reserved:world"]);
    expect(visible(g, { ...all, label: "class=xwing" }).nodes.map((n) => n.id).sort()).toEqual(["default/deathstar", "default/xwing"]);
    expect(visible(g, { ...all, namespaces: new Set(["kube-system"]) }).edges).toHaveLength(0);
  });

  it("an edge's rate is flows per second over its last window, and 0 once it went quiet", () => {
    let wall = 5_000; // the browser's clock, far from the flows'
    const r = new ServiceGraph(() => wall);
    const t0 = 1_700_000_000_000;
    for (let i = 0; i < 21; i++) r.add(landing("tiefighter", t0 + i * 500)); // 2/s for 10 s
    const e = r.edges.get("default/tiefighter->default/deathstar")!;
    expect(r.nowMs()).toBe(t0 + 10_000);
    expect(rateNow(e, r.nowMs())).toBeCloseTo(2, 5);
    wall += 5_000;
    r.add(landing("xwing", t0 + 15_000)); // the stream goes on elsewhere...
    expect(rateNow(e, r.nowMs())).toBeCloseTo(2, 5);
    wall += RATE_WINDOW_MS + 1;
    r.add(landing("xwing", t0 + 15_000 + RATE_WINDOW_MS + 1)); // ...until the edge was quiet a window
    expect(rateNow(e, r.nowMs())).toBe(0);
  });

  it("when the whole stream goes quiet, rates drop to 0 by the wall clock", () => {
    let wall = 0;
    const r = new ServiceGraph(() => wall);
    const t0 = 1_700_000_000_000;
    for (let i = 0; i < 21; i++) r.add(landing("tiefighter", t0 + i * 500));
    const e = r.edges.get("default/tiefighter->default/deathstar")!;
    wall += RATE_WINDOW_MS - 1; // no flow at all since
    expect(r.nowMs()).toBe(t0 + 10_000 + RATE_WINDOW_MS - 1);
    expect(rateNow(e, r.nowMs())).toBeCloseTo(2, 5);
    wall += 2;
    expect(rateNow(e, r.nowMs())).toBe(0);
    // A late flow (older than the newest) does not move the clock back.
    r.add(landing("xwing", t0));
    expect(r.nowMs()).toBe(t0 + 10_000 + RATE_WINDOW_MS + 1);
  });
});
