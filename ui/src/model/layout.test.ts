import { describe, expect, it } from "vitest";
import ELK from "elkjs/lib/elk.bundled.js";
import type { MapEdge, MapNode } from "./graph";
import { MapLayout, NODE_H, NODE_W, partition, QUICK_ABOVE, type Placed } from "./layout";
import { quickLayout } from "./quicklayout";

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
  it("quickLayout: edges point right, cycles broken, unconnected workloads packed, no overlaps", () => {
    const [a, b, c, d, e, f] = ["a", "b", "c", "d", "e", "f"].map((n) => node("x", n));
    const [g] = partition([a, b, c, d, e, f], [edge(a, b), edge(b, c), edge(c, a), edge(a, d)]);
    const box = quickLayout(g);
    const at = new Map(box.children!.map((k) => [k.id, k]));
    expect(at.size).toBe(6);
    expect(at.get("x/b")!.x!).toBeGreaterThan(at.get("x/a")!.x!);
    expect(at.get("x/c")!.x!).toBeGreaterThan(at.get("x/b")!.x!);
    expect(at.get("x/d")!.x!).toBeGreaterThan(at.get("x/a")!.x!);
    for (const k of box.children!) {
      expect(k.x! + NODE_W).toBeLessThanOrEqual(box.width!);
      expect(k.y! + NODE_H).toBeLessThanOrEqual(box.height!);
    }
  });

  it("a large map is laid out without ELK; each namespace a box, nothing overlapping", async () => {
    const { nodes, edges } = cluster(500, 20);
    let elkCalls = 0;
    const layout = new MapLayout(() => {
      elkCalls++;
      return new ELK();
    }, quickLayout);
    const p = await layout.layout(nodes, edges);
    expect(elkCalls).toBe(0);
    expect(p.groups).toHaveLength(20);
    expect(p.nodes.size).toBe(500);
    expect(inside(p)).toBe(true);
    expect(overlaps(p)).toEqual([]);
  });

  it("a small map is laid out by ELK, and only the namespaces that changed are laid out again", async () => {
    const { nodes, edges } = cluster(40, 4);
    expect(nodes.length).toBeLessThanOrEqual(QUICK_ABOVE);
    const elk = new ELK();
    let elkCalls = 0;
    const layout = new MapLayout(() => {
      elkCalls++;
      return elk;
    }, quickLayout);
    const first = await layout.layout(nodes, edges);
    expect(elkCalls).toBe(4);
    expect(layout.lastRuns).toBe(4);
    expect(overlaps(first)).toEqual([]);
    expect(inside(first)).toBe(true);
    const extra = node("ns-1", "new");
    const second = await layout.layout([...nodes, extra], [...edges, edge(nodes[1], extra)]);
    expect(layout.lastRuns).toBe(1);
    expect(second.nodes.get("ns-1/new")?.group).toBe("group:ns-1");
    // The other namespaces keep their inside.
    expect(second.nodes.get("ns-0/wl-0")).toEqual(first.nodes.get("ns-0/wl-0"));
  });
});
