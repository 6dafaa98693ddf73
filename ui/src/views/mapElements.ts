// React Flow's nodes and edges for the laid-out map. Nodes carry their size and handle places
// (they are fixed by the layout), so React Flow draws the edges in the same frame as the nodes
// instead of measuring 500 nodes in the DOM first; and objects are reused while nothing
// drawn of them changed, so a flow that only bumps a counter does not make React Flow redo
// the whole map.
import { MarkerType, Position, type Edge, type Node } from "@xyflow/react";
import { edgeVerdict, rateNow, VERDICT_COLOURS, type MapEdge, type MapNode } from "../model/graph";
import { NODE_H, NODE_W, OUTSIDE, type Placed } from "../model/layout";

const HANDLES = [
  { type: "target" as const, position: Position.Left, x: 0, y: NODE_H / 2 - 0.5, width: 1, height: 1 },
  { type: "source" as const, position: Position.Right, x: NODE_W - 1, y: NODE_H / 2 - 0.5, width: 1, height: 1 },
];

export function mapNodes(placed: Placed, nodes: Map<string, MapNode>): Node[] {
  const out: Node[] = [];
  for (const g of placed.groups) {
    const name = g.id.slice("group:".length);
    out.push({
      id: g.id, position: { x: g.x, y: g.y }, data: { label: name === OUTSIDE ? name : `namespace ${name}` },
      width: g.w, height: g.h, measured: { width: g.w, height: g.h },
      className: "ns-group", selectable: false, draggable: false,
    });
  }
  for (const [id, p] of placed.nodes) {
    const n = nodes.get(id);
    if (!n) continue;
    out.push({
      id, parentId: p.group, extent: "parent", position: { x: p.x, y: p.y },
      data: { label: n.name },
      width: NODE_W, height: NODE_H, measured: { width: NODE_W, height: NODE_H }, handles: HANDLES,
      sourcePosition: Position.Right,
      targetPosition: Position.Left,
      className: n.reserved ? "wl reserved" : "wl",
    });
  }
  return out;
}

export function edgeLabel(e: MapEdge, nowMs: number): string {
  const l7 = [...e.l7].slice(0, 3).join(", ");
  const rate = rateNow(e, nowMs);
  return `${[...e.ports].slice(0, 3).join(", ")}${l7 ? ` · ${l7}` : ""}${rate ? ` · ${rate.toFixed(1)}/s` : ""}`;
}

/** Edges for React Flow, each rebuilt only when its colour or shown label changed. */
export class EdgeElements {
  private byId = new Map<string, { sig: string; edge: Edge }>();
  private last: Edge[] = [];

  /** `labelled(e)`: whether the edge shows its label (on a large map only when hovered). */
  build(edges: MapEdge[], placed: Placed, labelled: (e: MapEdge) => boolean, nowMs: number): Edge[] {
    const out: Edge[] = [];
    let changed = false;
    for (const e of edges) {
      if (!placed.nodes.has(e.source) || !placed.nodes.has(e.target)) continue;
      const v = edgeVerdict(e);
      const shown = labelled(e) ? edgeLabel(e, nowMs) : undefined;
      const sig = `${v}|${shown ?? ""}`;
      let cached = this.byId.get(e.id);
      if (cached?.sig !== sig) {
        const colour = VERDICT_COLOURS[v];
        cached = {
          sig,
          edge: {
            id: e.id, source: e.source, target: e.target,
            label: shown,
            style: { stroke: colour, strokeWidth: 2 },
            labelStyle: { fill: colour, fontSize: 11 },
            markerEnd: { type: MarkerType.ArrowClosed, color: colour },
            data: { verdict: v },
            className: `edge-${v}`,
          },
        };
        this.byId.set(e.id, cached);
        changed = true;
      }
      changed ||= this.last[out.length] !== cached.edge;
      out.push(cached.edge);
    }
    if (!changed && out.length === this.last.length) return this.last;
    this.last = out;
    return out;
  }
}
