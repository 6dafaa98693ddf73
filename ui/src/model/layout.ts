// Positions for the service map: one box per namespace (reserved identities and outside
// addresses in their own box), each laid out on its own by ELK's layered algorithm over the
// edges inside it, edges left to right; the boxes are then packed in rows.
//
// A namespace's layout is kept while its workloads and inner edges stay the same, so a new
// flow re-runs ELK only for the namespace it changed, and the other boxes keep their inside.
import type { ElkNode } from "elkjs/lib/elk-api.js";
import type { MapEdge, MapNode } from "./graph";

export const NODE_W = 170;
export const NODE_H = 44;
export const OUTSIDE = "(outside the cluster)";
const GAP = 40;

export interface PlacedGroup {
  id: string;
  x: number;
  y: number;
  w: number;
  h: number;
}

export interface Placed {
  groups: PlacedGroup[];
  nodes: Map<string, { x: number; y: number; group: string }>;
}

/** What the map needs of ELK (elkjs' ELK, in a worker in the page, bundled in tests). */
export interface Layouter {
  layout(graph: ElkNode): Promise<ElkNode>;
}

export function groupOf(n: MapNode): string {
  return n.namespace || OUTSIDE;
}

export interface Group {
  id: string; // "group:<namespace>"
  nodes: MapNode[];
  edges: MapEdge[]; // both ends inside the group
  key: string; // its structure: what its layout depends on
}

/** The namespaces' boxes in display order (alphabetical, reserved identities last), each with
 * its workloads and the edges inside it. */
export function partition(nodes: MapNode[], edges: MapEdge[]): Group[] {
  const byGroup = new Map<string, Group>();
  const groupOfId = new Map<string, Group>();
  for (const n of nodes) {
    const name = groupOf(n);
    let g = byGroup.get(name);
    if (!g) byGroup.set(name, (g = { id: `group:${name}`, nodes: [], edges: [], key: "" }));
    g.nodes.push(n);
    groupOfId.set(n.id, g);
  }
  for (const e of edges) {
    const g = groupOfId.get(e.source);
    if (g && g === groupOfId.get(e.target)) g.edges.push(e);
  }
  const names = [...byGroup.keys()].sort((a, b) => (a === OUTSIDE ? 1 : b === OUTSIDE ? -1 : a.localeCompare(b)));
  return names.map((name) => {
    const g = byGroup.get(name)!;
    g.key = g.nodes.map((n) => n.id).sort().join("|") + "#" + g.edges.map((e) => e.id).sort().join("|");
    return g;
  });
}

// ELK's layered algorithm with its linear-time choices: greedy cycle breaking, longest-path
// layering, one crossing-minimisation sweep without the greedy switch, the simple placer and no
// post-compaction. A namespace's box is small, and the full-quality passes cost several times
// as much per box while adding little to a few dozen workloads.
const LAYERED: Record<string, string> = {
  "elk.algorithm": "layered",
  "elk.direction": "RIGHT",
  "elk.spacing.nodeNode": "20",
  "elk.layered.spacing.nodeNodeBetweenLayers": "50",
  "elk.padding": "[top=36,left=16,bottom=16,right=16]",
  "elk.aspectRatio": "1.6",
  "elk.layered.thoroughness": "1",
  "elk.layered.cycleBreaking.strategy": "GREEDY",
  "elk.layered.layering.strategy": "LONGEST_PATH",
  "elk.layered.crossingMinimization.greedySwitch.type": "OFF",
  "elk.layered.nodePlacement.strategy": "SIMPLE",
  "elk.layered.compaction.postCompaction.strategy": "NONE",
};

/** The ELK graph for one namespace's box. Packing unconnected parts into rows (instead of one
 * tall column) is one of ELK's dearer steps, so it is asked for only when there is more than
 * one part. */
export function elkGraph(g: Group): ElkNode {
  return {
    id: g.id,
    layoutOptions: { ...LAYERED, "elk.separateConnectedComponents": String(components(g) > 1) },
    children: g.nodes.map((m) => ({ id: m.id, width: NODE_W, height: NODE_H })),
    edges: g.edges.map((e) => ({ id: e.id, sources: [e.source], targets: [e.target] })),
  };
}

/** The namespaces to lay out as one ELK graph: each box a compound node laid out on its own
 * (ELK's default hierarchy handling lays out children before their parent), the root left
 * where it is ('fixed': pack() places the boxes). One call instead of one per namespace: each
 * call to ELK has a fixed cost (the graph's import and the algorithm's set-up, ~15 ms in the
 * page's worker), which made 20 boxes cost seconds while ELK was cold. */
export function elkBatch(groups: Group[]): ElkNode {
  return { id: "map", layoutOptions: { "elk.algorithm": "fixed" }, children: groups.map(elkGraph), edges: [] };
}

function components(g: Group): number {
  const parent = new Map(g.nodes.map((n) => [n.id, n.id]));
  const find = (x: string): string => {
    let r = x;
    while (parent.get(r) !== r) r = parent.get(r)!;
    parent.set(x, r);
    return r;
  };
  for (const e of g.edges) parent.set(find(e.source), find(e.target));
  return new Set(g.nodes.map((n) => find(n.id))).size;
}

/** Rows about as wide as the square root of the boxes' total area (and at least 1200). */
export function pack(boxes: { id: string; w: number; h: number }[], gap = GAP): PlacedGroup[] {
  const area = boxes.reduce((a, b) => a + b.w * b.h, 0);
  const rowWidth = Math.max(1200, Math.sqrt(area) * 1.6);
  const out: PlacedGroup[] = [];
  let x = 0;
  let y = 0;
  let rowHeight = 0;
  for (const b of boxes) {
    if (x > 0 && x + b.w > rowWidth) {
      x = 0;
      y += rowHeight + gap;
      rowHeight = 0;
    }
    out.push({ id: b.id, x, y, w: b.w, h: b.h });
    x += b.w + gap;
    rowHeight = Math.max(rowHeight, b.h);
  }
  return out;
}

/** The map's layout, namespace by namespace, remembering each namespace's last layout. */
export class MapLayout {
  private cache = new Map<string, { key: string; laid: ElkNode }>();
  /** How many namespaces were laid out in the last call (the rest came from the cache). */
  lastRuns = 0;

  /** `elk`: called when a box needs ELK (the page starts ELK's worker only then). */
  constructor(private readonly elk: () => Layouter) {}

  async layout(nodes: MapNode[], edges: MapEdge[]): Promise<Placed> {
    const groups = partition(nodes, edges);
    const stale = groups.filter((g) => this.cache.get(g.id)?.key !== g.key);
    this.lastRuns = stale.length;
    if (stale.length) {
      const laid = await this.elk().layout(elkBatch(stale));
      for (const [i, g] of stale.entries()) this.cache.set(g.id, { key: g.key, laid: laid.children![i] });
    }
    const boxes = groups.map((g) => this.cache.get(g.id)!.laid);
    const placed: Placed = { groups: pack(boxes.map((b) => ({ id: b.id, w: b.width ?? 0, h: b.height ?? 0 }))), nodes: new Map() };
    for (const b of boxes) {
      for (const c of b.children ?? []) placed.nodes.set(c.id, { x: c.x ?? 0, y: c.y ?? 0, group: b.id });
    }
    return placed;
  }
}
