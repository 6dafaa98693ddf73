import { describe, expect, it } from "vitest";
import ELK from "elkjs/lib/elk.bundled.js";
import type { MapEdge, MapNode } from "./graph";
import { MapLayout, NODE_H, NODE_W, partition, type Layouter, type Placed } from "./layout";

function node(ns: string, name: string): MapNode {
  return { id: `${ns}/${name}`, namespace: ns, name, reserved: false, labels: [] };
}
function edge(s: MapNode, t: MapNode): MapEdge {
  return {
    id: `${s.id}->${t.id}`, source: s.id, target: t.id, ports: new Set(["80/TCP"]), l7: new Set(),
    forwarded: 1, dropped: 0, audit: 0, lastMs: 0, windowStart: 0, windowCount: 0, rate: 0,
  };
}
/** `count` workloads in `spaces` namespaces; each talks to the next of its namespace (a cycle)
 * and to one in the next namespace, like `septum bench ui`'s map. */
function cluster(count: number, spaces: number) {
  const nodes = Array.from({ length: count }, (_, i) => node(`ns-${i % spaces}`, `wl-${i}`));
  const edges = nodes.flatMap((n, i) => [edge(n, nodes[(i + spaces) % count]), edge(n, nodes[(i + 1) % count])]);
  return { nodes, edges };
}

function overlaps(p: Placed): string[] {
  const abs = [...p.nodes].map(([id, at]) => {
    const g = p.groups.find((x) => x.id === at.group)!;
    return { id, x: g.x + at.x, y: g.y + at.y };
  });
  const bad: string[] = [];
  for (let i = 0; i < abs.length; i++)
    for (let j = i + 1; j < abs.length; j++)
      if (Math.abs(abs[i].x - abs[j].x) < NODE_W && Math.abs(abs[i].y - abs[j].y) < NODE_H) bad.push(`${abs[i].id} ${abs[j].id}`);
  return bad;
}

function inside(p: Placed): boolean {
  return [...p.nodes.values()].every((at) => {
    const g = p.groups.find((x) => x.id === at.group)!;
    return at.x >= 0 && at.y >= 0 && at.x + NODE_W <= g.w && at.y + NODE_H <= g.h;
  });
}

describe("the map's layout", () => {
  it("edges point right inside a box, cycles broken, unconnected workloads side by side", async () => {
    const [a, b, c, d, e, f] = ["a", "b", "c", "d", "e", "f"].map((n) => node("x", n));
    const p = await new MapLayout(() => new ELK()).layout([a, b, c, d, e, f], [edge(a, b), edge(b, c), edge(c, a), edge(a, d)]);
    const x = (n: MapNode) => p.nodes.get(n.id)!.x;
    expect(p.nodes.size).toBe(6);
    // The cycle a -> b -> c -> a is broken at one edge; the other two point right.
    const right = [[a, b], [b, c], [c, a]].filter(([s, t]) => x(t) > x(s)).length;
    expect(right).toBe(2);
    expect(x(d)).toBeGreaterThan(x(a));
    expect(overlaps(p)).toEqual([]);
    expect(inside(p)).toBe(true);
  });

  it("a 500-workload map: one ELK call for all its namespaces, each a box, nothing overlapping", async () => {
    const { nodes, edges } = cluster(500, 20);
    const elk = new ELK();
    const graphs: number[] = [];
    const counting: Layouter = { layout: (g) => (graphs.push(g.children?.length ?? 0), elk.layout(g)) };
    const layout = new MapLayout(() => counting);
    const p = await layout.layout(nodes, edges);
    expect(graphs).toEqual([20]);
    expect(p.groups).toHaveLength(20);
    expect(p.nodes.size).toBe(500);
    expect(inside(p)).toBe(true);
    expect(overlaps(p)).toEqual([]);
    // Layered left to right: inside a namespace, most edges point right (one per cycle may not).
    const inner = edges.filter((e) => p.nodes.get(e.source)!.group === p.nodes.get(e.target)!.group);
    const rightward = inner.filter((e) => p.nodes.get(e.target)!.x > p.nodes.get(e.source)!.x).length;
    expect(rightward).toBeGreaterThanOrEqual(inner.length - 20);
  }, 30_000);

  it("a small map is laid out by ELK, and only the namespaces that changed are laid out again", async () => {
    const { nodes, edges } = cluster(40, 4);
    const elk = new ELK();
    let elkCalls = 0;
    const layout = new MapLayout(() => {
      elkCalls++;
      return elk;
    });
    const first = await layout.layout(nodes, edges);
    expect(elkCalls).toBe(1);
    expect(layout.lastRuns).toBe(4);
    expect(overlaps(first)).toEqual([]);
    expect(inside(first)).toBe(true);
    const extra = node("ns-1", "new");
    const second = await layout.layout([...nodes, extra], [...edges, edge(nodes[1], extra)]);
    expect(layout.lastRuns).toBe(1);
    expect(elkCalls).toBe(2);
    expect(second.nodes.get("ns-1/new")?.group).toBe("group:ns-1");
    // The other namespaces keep their inside.
    expect(second.nodes.get("ns-0/wl-0")).toEqual(first.nodes.get("ns-0/wl-0"));
  });
});
