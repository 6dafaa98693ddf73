// The layout of one namespace's box on a large map, without ELK: ELK's layered algorithm costs
// ~15 ms a namespace box in the page here (its per-graph set-up, however small the box), which
// at 500 workloads was most of the time to a drawn map. This is the same idea reduced to what a
// box of a few dozen workloads needs, in one pass each: break cycles (depth first), layer by
// longest path (edges point right), order each layer by its predecessors' places (one sweep),
// and pack the unconnected parts in rows as ELK's component packing does.
import type { ElkNode } from "elkjs/lib/elk-api.js";
import { NODE_H, NODE_W, pack, type Group } from "./layout";

const NODE_GAP = 20; // elk.spacing.nodeNode
const LAYER_GAP = 50; // elk.layered.spacing.nodeNodeBetweenLayers
const PAD = { top: 36, left: 16, bottom: 16, right: 16 };
const PART_GAP = 20;

/** The box as ELK would return it: size and the workloads' places inside it. */
export function quickLayout(g: Group): ElkNode {
  const ids = g.nodes.map((n) => n.id).sort();
  const out = new Map<string, string[]>(ids.map((id) => [id, []]));
  const undirected = new Map<string, string[]>(ids.map((id) => [id, []]));
  for (const e of g.edges) {
    if (e.source === e.target) continue;
    out.get(e.source)!.push(e.target);
    undirected.get(e.source)!.push(e.target);
    undirected.get(e.target)!.push(e.source);
  }
  const seen = new Set<string>();
  const parts: { id: string; w: number; h: number; places: Map<string, { x: number; y: number }> }[] = [];
  for (const start of ids) {
    if (seen.has(start)) continue;
    const members: string[] = [];
    const stack = [start];
    seen.add(start);
    while (stack.length) {
      const id = stack.pop()!;
      members.push(id);
      for (const m of undirected.get(id)!) if (!seen.has(m)) (seen.add(m), stack.push(m));
    }
    parts.push({ id: start, ...layered(members.sort(), out) });
  }
  // The largest parts first, as ELK orders its components; singletons fill the last rows.
  parts.sort((a, b) => b.w * b.h - a.w * a.h || a.id.localeCompare(b.id));
  const placedParts = pack(parts, PART_GAP);
  const children: ElkNode[] = [];
  let w = 0;
  let h = 0;
  placedParts.forEach((p, i) => {
    for (const [id, at] of parts[i].places) {
      children.push({ id, x: PAD.left + p.x + at.x, y: PAD.top + p.y + at.y, width: NODE_W, height: NODE_H });
    }
    w = Math.max(w, p.x + p.w);
    h = Math.max(h, p.y + p.h);
  });
  return { id: g.id, width: PAD.left + w + PAD.right, height: PAD.top + h + PAD.bottom, children };
}

/** One connected part: layers left to right, each a column. */
function layered(members: string[], out: Map<string, string[]>) {
  const inPart = new Set(members);
  // Depth-first from each node in name order; an edge to a node still on the stack closes a
  // cycle and is left out of the layering (it is still drawn).
  const state = new Map<string, 1 | 2>();
  const forward = new Map<string, string[]>(members.map((id) => [id, []]));
  for (const root of members) {
    if (state.has(root)) continue;
    const stack: [string, number][] = [[root, 0]];
    state.set(root, 1);
    while (stack.length) {
      const top = stack[stack.length - 1];
      const next = out.get(top[0])!.filter((t) => inPart.has(t));
      if (top[1] < next.length) {
        const t = next[top[1]++];
        if (state.get(t) === 1) continue; // back edge
        forward.get(top[0])!.push(t);
        if (!state.has(t)) (state.set(t, 1), stack.push([t, 0]));
      } else {
        state.set(top[0], 2);
        stack.pop();
      }
    }
  }
  // Longest path from the sources (Kahn's order over the acyclic edges).
  const indegree = new Map(members.map((id) => [id, 0]));
  for (const ts of forward.values()) for (const t of ts) indegree.set(t, indegree.get(t)! + 1);
  const layer = new Map(members.map((id) => [id, 0]));
  const preds = new Map<string, string[]>(members.map((id) => [id, []]));
  const queue = members.filter((id) => indegree.get(id) === 0);
  for (let i = 0; i < queue.length; i++) {
    const id = queue[i];
    for (const t of forward.get(id)!) {
      layer.set(t, Math.max(layer.get(t)!, layer.get(id)! + 1));
      preds.get(t)!.push(id);
      indegree.set(t, indegree.get(t)! - 1);
      if (indegree.get(t) === 0) queue.push(t);
    }
  }
  const columns: string[][] = [];
  for (const id of queue) (columns[layer.get(id)!] ??= []).push(id);
  // One sweep left to right: a node sits near the mean row of what points to it.
  const row = new Map<string, number>();
  for (const col of columns) {
    const centre = (id: string) => {
      const p = preds.get(id)!;
      return p.length ? p.reduce((a, q) => a + row.get(q)!, 0) / p.length : Number.POSITIVE_INFINITY;
    };
    col.sort((a, b) => centre(a) - centre(b) || a.localeCompare(b));
    col.forEach((id, i) => row.set(id, i));
  }
  const tallest = Math.max(...columns.map((c) => c.length));
  const places = new Map<string, { x: number; y: number }>();
  columns.forEach((col, x) => {
    // Columns centred on the tallest one, as ELK's placement centres a short layer.
    const offset = ((tallest - col.length) * (NODE_H + NODE_GAP)) / 2;
    col.forEach((id, i) => places.set(id, { x: x * (NODE_W + LAYER_GAP), y: offset + i * (NODE_H + NODE_GAP) }));
  });
  return {
    w: columns.length * (NODE_W + LAYER_GAP) - LAYER_GAP,
    h: tallest * (NODE_H + NODE_GAP) - NODE_GAP,
    places,
  };
}
