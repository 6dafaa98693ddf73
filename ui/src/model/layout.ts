// Positions for the service map: ELK's layered algorithm on a compound graph, one box per
// namespace (reserved identities and outside addresses in their own box), edges left to right.
import ELK, { type ElkNode } from "elkjs/lib/elk-api.js";
import ElkWorker from "elkjs/lib/elk-worker.min.js?worker";
import type { MapEdge, MapNode } from "./graph";

export const NODE_W = 170;
export const NODE_H = 44;
export const OUTSIDE = "(outside the cluster)";

export interface Placed {
  groups: { id: string; x: number; y: number; w: number; h: number }[];
  nodes: Map<string, { x: number; y: number; group: string }>;
}

// ELK in a web worker: the layout runs beside the flow stream's decoding and React's
// rendering instead of blocking them, and is warmed up at start (its first call pays the
// module's initialisation) while the page is still receiving the first flows.
const elk = new ELK({ workerFactory: () => new ElkWorker() as unknown as Worker });
void elk.layout({ id: "warm-up", children: [{ id: "a", width: 1, height: 1 }], edges: [] });

export function groupOf(n: MapNode): string {
  return n.namespace || OUTSIDE;
}

/** Each namespace laid out on its own (ELK layered over the edges inside it), then the
 * namespace boxes packed in rows, reserved identities last. One ELK run over the whole
 * cluster with its cross-namespace edges took seconds at 500 workloads; this is linear in
 * the namespaces and keeps each box readable. */
export async function layout(nodes: MapNode[], edges: MapEdge[]): Promise<Placed> {
  const byGroup = new Map<string, MapNode[]>();
  for (const n of nodes) {
    const g = groupOf(n);
    if (!byGroup.has(g)) byGroup.set(g, []);
    byGroup.get(g)!.push(n);
  }
  const groupOfId = new Map(nodes.map((n) => [n.id, groupOf(n)]));
  const inner = new Map<string, MapEdge[]>();
  for (const e of edges) {
    const g = groupOfId.get(e.source);
    if (g !== undefined && g === groupOfId.get(e.target)) {
      if (!inner.has(g)) inner.set(g, []);
      inner.get(g)!.push(e);
    }
  }
  const names = [...byGroup.keys()].sort((a, b) =>
    a === OUTSIDE ? 1 : b === OUTSIDE ? -1 : a.localeCompare(b),
  );
  const laid = await Promise.all(
    names.map((g): Promise<ElkNode> =>
      elk.layout(<ElkNode>{
        id: `group:${g}`,
        layoutOptions: {
          "elk.algorithm": "layered",
          "elk.direction": "RIGHT",
          "elk.spacing.nodeNode": "20",
          "elk.layered.spacing.nodeNodeBetweenLayers": "50",
          "elk.padding": "[top=36,left=16,bottom=16,right=16]",
          // Unconnected workloads wrap into rows instead of one tall column.
          "elk.separateConnectedComponents": "true",
          "elk.aspectRatio": "1.6",
          // One sweep of crossing minimisation and the simple placer: a namespace's box is
          // small, and a full-quality pass took ~25 ms a box on this machine's shared cores.
          "elk.layered.thoroughness": "1",
          "elk.layered.nodePlacement.strategy": "SIMPLE",
        },
        children: byGroup.get(g)!.map((m) => ({ id: m.id, width: NODE_W, height: NODE_H })),
        edges: (inner.get(g) ?? []).map((e) => ({ id: e.id, sources: [e.source], targets: [e.target] })),
      }),
    ),
  );
  // Pack the boxes in rows about as wide as the square root of their total area.
  const area = laid.reduce((a, g) => a + (g.width ?? 0) * (g.height ?? 0), 0);
  const rowWidth = Math.max(1200, Math.sqrt(area) * 1.6);
  const GAP = 40;
  const placed: Placed = { groups: [], nodes: new Map() };
  let x = 0;
  let y = 0;
  let rowHeight = 0;
  for (const g of laid) {
    const w = g.width ?? 0;
    const h = g.height ?? 0;
    if (x > 0 && x + w > rowWidth) {
      x = 0;
      y += rowHeight + GAP;
      rowHeight = 0;
    }
    placed.groups.push({ id: g.id, x, y, w, h });
    for (const c of g.children ?? []) placed.nodes.set(c.id, { x: c.x ?? 0, y: c.y ?? 0, group: g.id });
    x += w + GAP;
    rowHeight = Math.max(rowHeight, h);
  }
  return placed;
}
