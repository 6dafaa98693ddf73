// Positions for the service map: ELK's layered algorithm on a compound graph, one box per
// namespace (reserved identities and outside addresses in their own box), edges left to right.
import ELK, { type ElkNode } from "elkjs/lib/elk.bundled.js";
import type { MapEdge, MapNode } from "./graph";

export const NODE_W = 170;
export const NODE_H = 44;
export const OUTSIDE = "(outside the cluster)";

export interface Placed {
  groups: { id: string; x: number; y: number; w: number; h: number }[];
  nodes: Map<string, { x: number; y: number; group: string }>;
}

const elk = new ELK();

export function groupOf(n: MapNode): string {
  return n.namespace || OUTSIDE;
}

export async function layout(nodes: MapNode[], edges: MapEdge[]): Promise<Placed> {
  const byGroup = new Map<string, MapNode[]>();
  for (const n of nodes) {
    const g = groupOf(n);
    if (!byGroup.has(g)) byGroup.set(g, []);
    byGroup.get(g)!.push(n);
  }
  const graph: ElkNode = {
    id: "root",
    layoutOptions: {
      "elk.algorithm": "layered",
      "elk.direction": "RIGHT",
      "elk.hierarchyHandling": "INCLUDE_CHILDREN",
      "elk.spacing.nodeNode": "24",
      "elk.layered.spacing.nodeNodeBetweenLayers": "60",
      "elk.padding": "[top=36,left=16,bottom=16,right=16]",
    },
    children: [...byGroup.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([g, members]) => ({
      id: `group:${g}`,
      layoutOptions: { "elk.padding": "[top=36,left=16,bottom=16,right=16]" },
      children: members.map((m) => ({ id: m.id, width: NODE_W, height: NODE_H })),
    })),
    edges: edges.map((e) => ({ id: e.id, sources: [e.source], targets: [e.target] })),
  };
  const out = await elk.layout(graph);
  const placed: Placed = { groups: [], nodes: new Map() };
  for (const g of out.children ?? []) {
    placed.groups.push({ id: g.id, x: g.x ?? 0, y: g.y ?? 0, w: g.width ?? 0, h: g.height ?? 0 });
    for (const c of g.children ?? []) {
      placed.nodes.set(c.id, { x: c.x ?? 0, y: c.y ?? 0, group: g.id });
    }
  }
  return placed;
}
