// The service map: every namespace at once (or the chosen ones), workloads as nodes inside
// their namespace, reserved identities as their own nodes, edges coloured by verdict and
// labelled with ports, L7 methods/paths and rates.
import {
  Background,
  Controls,
  MarkerType,
  Position,
  ReactFlow,
  type Edge,
  type Node,
} from "@xyflow/react";
import "@xyflow/react/dist/style.css";
import { useEffect, useMemo, useReducer, useRef, useState } from "react";
import {
  edgeVerdict,
  ServiceGraph,
  VERDICT_COLOURS,
  visible,
  type EdgeVerdict,
  type MapFilter,
} from "../model/graph";
import { groupOf, layout, NODE_H, NODE_W, OUTSIDE, type Placed } from "../model/layout";
import { runStream } from "../stream";
import { markMapRendered, type Health } from "../health";

const LAYOUT_EVERY_MS = 2000;
const FIRST_QUIET_MS = 60;
const BIG_MAP_EDGES = 200;
const FIRST_MAX_MS = 1000;
const VERDICTS: EdgeVerdict[] = ["forwarded", "dropped", "audit", "mixed"];

export function ServiceMap({ health, onEdge }: { health: Health; onEdge: (filter: string) => void }) {
  const graph = useRef(new ServiceGraph());
  const [, tick] = useReducer((n: number) => n + 1, 0);
  const [filter, setFilter] = useState<MapFilter>({ namespaces: new Set(), label: "", verdicts: new Set(), protocol: "" });
  const [placed, setPlaced] = useState<Placed | null>(null);
  const [layoutKey, setLayoutKey] = useState("");
  const [hovered, setHovered] = useState("");

  useEffect(() => {
    const ctl = new AbortController();
    let retry: ReturnType<typeof setTimeout> | undefined;
    const start = () =>
      runStream(
        { filters: { whitelist: [], blacklist: [] }, follow: true, last: 10_000 },
        {
          onBatch: (batch) => {
            if (!graph.current.edges.size) performance.mark("septum:map-first-batch");
            for (const r of batch) if (r.responseTypes.case === "flow") graph.current.add(r.responseTypes.value);
            tick();
          },
          onLost: (n, s) => health.lost(n, s),
          onNodeStatus: (st, nodes, m) => health.nodeStatus(st, nodes, m),
          onError: (m) => {
            health.streamError(m);
            retry = setTimeout(start, 2000);
          },
          onEnd: () => undefined,
        },
        ctl.signal,
      );
    void start();
    return () => {
      ctl.abort();
      if (retry) clearTimeout(retry);
    };
  }, [health]);

  const view = visible(graph.current, filter);
  const structure = view.nodes.map((n) => n.id).sort().join("|") + "#" + view.edges.map((e) => e.id).sort().join("|");

  // Re-layout when the set of nodes/edges changes, at most every LAYOUT_EVERY_MS. The first
  // layout waits for the history burst to go quiet (FIRST_QUIET_MS, at most FIRST_MAX_MS after
  // the first flow), so a large map is laid out once, not first with a handful of nodes.
  const lastLayout = useRef(0);
  const firstSeen = useRef(0);
  useEffect(() => {
    if (structure === layoutKey || !view.nodes.length) return;
    if (!firstSeen.current) firstSeen.current = Date.now();
    const wait = placed
      ? Math.max(0, lastLayout.current + LAYOUT_EVERY_MS - Date.now())
      : Math.min(FIRST_QUIET_MS, Math.max(0, firstSeen.current + FIRST_MAX_MS - Date.now()));
    const t = setTimeout(() => {
      lastLayout.current = Date.now();
      const v = visible(graph.current, filter);
      performance.mark("septum:map-layout-start");
      void layout(v.nodes, v.edges).then((p) => {
        performance.mark("septum:map-layout-end");
        setPlaced(p);
        setLayoutKey(structure);
      });
    }, wait);
    return () => clearTimeout(t);
  }, [structure, layoutKey, filter, placed]);

  const namespaces = useMemo(
    () => [...new Set([...graph.current.nodes.values()].map((n) => n.namespace).filter(Boolean))].sort(),
    [graph.current.nodes.size],
  );

  const bigMap = view.edges.length > BIG_MAP_EDGES;
  const rfNodes: Node[] = [];
  const rfEdges: Edge[] = [];
  if (placed) {
    for (const g of placed.groups) {
      const name = g.id.slice("group:".length);
      rfNodes.push({
        id: g.id, position: { x: g.x, y: g.y }, data: { label: name === OUTSIDE ? name : `namespace ${name}` },
        style: { width: g.w, height: g.h }, className: "ns-group", selectable: false, draggable: false,
      });
    }
    for (const n of view.nodes) {
      const p = placed.nodes.get(n.id);
      if (!p) continue;
      rfNodes.push({
        id: n.id, parentId: p.group, extent: "parent", position: { x: p.x, y: p.y },
        data: { label: n.name },
        style: { width: NODE_W, height: NODE_H },
        sourcePosition: Position.Right,
        targetPosition: Position.Left,
        className: n.reserved ? "wl reserved" : "wl",
      });
    }
    for (const e of view.edges) {
      if (!placed.nodes.has(e.source) || !placed.nodes.has(e.target)) continue;
      const v = edgeVerdict(e);
      const colour = VERDICT_COLOURS[v];
      const l7 = [...e.l7].slice(0, 3).join(", ");
      const edgeLabel = `${[...e.ports].slice(0, 3).join(", ")}${l7 ? ` · ${l7}` : ""}${e.rate ? ` · ${e.rate.toFixed(1)}/s` : ""}`;
      rfEdges.push({
        id: e.id, source: e.source, target: e.target,
        // Labels on every edge of a large map cost more to draw than they tell at the zoom it
        // fits at: there, an edge's ports, L7 and rate show when it is hovered or selected.
        label: bigMap && !(hovered === e.id) ? undefined : edgeLabel,
        style: { stroke: colour, strokeWidth: 2 },
        labelStyle: { fill: colour, fontSize: 11 },
        markerEnd: { type: MarkerType.ArrowClosed, color: colour },
        data: { verdict: v, label: edgeLabel },
        className: `edge-${v}`,
      });
    }
  }

  useEffect(() => {
    // After the browser has painted the laid-out map, not when React committed it.
    if (placed) requestAnimationFrame(() => setTimeout(() => markMapRendered(placed.nodes.size), 0));
  }, [placed]);

  const toggle = <T,>(set: Set<T>, v: T) => {
    const next = new Set(set);
    if (next.has(v)) next.delete(v);
    else next.add(v);
    return next;
  };

  return (
    <div className="map">
      <div className="toolbar">
        <span>namespaces:</span>
        {namespaces.map((ns) => (
          <label key={ns}>
            <input type="checkbox" checked={filter.namespaces.has(ns)} onChange={() => setFilter({ ...filter, namespaces: toggle(filter.namespaces, ns) })} />
            {ns}
          </label>
        ))}
        <span className="muted">{filter.namespaces.size ? "" : "(all)"}</span>
        <input placeholder="label, e.g. org=empire" value={filter.label} onChange={(e) => setFilter({ ...filter, label: e.target.value })} data-testid="map-label" />
        {VERDICTS.map((v) => (
          <label key={v} style={{ color: VERDICT_COLOURS[v] }}>
            <input type="checkbox" checked={filter.verdicts.has(v)} onChange={() => setFilter({ ...filter, verdicts: toggle(filter.verdicts, v) })} />
            {v}
          </label>
        ))}
        <select value={filter.protocol} onChange={(e) => setFilter({ ...filter, protocol: e.target.value })} data-testid="map-protocol">
          <option value="">any protocol</option>
          <option>TCP</option><option>UDP</option><option>SCTP</option><option>ICMPv4</option><option>ICMPv6</option>
        </select>
        <span className="muted" data-testid="map-count">{view.nodes.length} nodes · {view.edges.length} edges</span>
      </div>
      <div className="canvas" data-testid="map-canvas">
        <ReactFlow
          nodes={rfNodes}
          edges={rfEdges}
          fitView
          onlyRenderVisibleElements
          minZoom={0.05}
          nodesConnectable={false}
          onEdgeMouseEnter={(_, edge) => setHovered(edge.id)}
          onEdgeMouseLeave={() => setHovered("")}
          onEdgeClick={(_, edge) => {
            const s = graph.current.nodes.get(edge.source);
            const t = graph.current.nodes.get(edge.target);
            const side = (flag: string, n: typeof s) =>
              !n ? "" : n.namespace ? `--${flag}-pod ${n.namespace}/${n.name}` : `--${flag}-label reserved:${n.name}`;
            onEdge(`${side("from", s)} ${side("to", t)}`.trim());
          }}
          key={layoutKey ? "laid" : "empty"}
        >
          <Background />
          <Controls />
        </ReactFlow>
      </div>
    </div>
  );
}

export { groupOf };
