// The service map: every namespace at once (or the chosen ones), workloads as nodes inside
// their namespace, reserved identities as their own nodes, edges coloured by verdict and
// labelled with ports, L7 methods/paths and rates.
import { Background, Controls, ReactFlow, type ReactFlowInstance } from "@xyflow/react";
import "@xyflow/react/dist/style.css";
import { useEffect, useMemo, useReducer, useRef, useState } from "react";
import { RATE_WINDOW_MS, ServiceGraph, VERDICT_COLOURS, visible, type EdgeVerdict, type MapFilter } from "../model/graph";
import { groupOf, type MapLayout, type Placed } from "../model/layout";
import { mapLayout } from "../model/elk";
import { EdgeElements, mapNodes } from "./mapElements";
import { observer } from "../api";
import { runStream } from "../stream";
import { markMapRendered, type Health } from "../health";

const LAYOUT_EVERY_MS = 2000;
const FIRST_QUIET_MS = 60;
// Waited for quiet when the history the relay counted has not all come (its count may include
// what GetFlows does not send): long enough for a loaded machine's pauses in the burst.
const COUNTED_QUIET_MS = 400;
const FIRST_MAX_MS = 3000;
const BIG_MAP_EDGES = 200;
const HISTORY = 10_000;
const VERDICTS: EdgeVerdict[] = ["forwarded", "dropped", "audit", "mixed"];

export function ServiceMap({ health, onEdge }: { health: Health; onEdge: (filter: string) => void }) {
  const graph = useRef(new ServiceGraph());
  const [, tick] = useReducer((n: number) => n + 1, 0);
  const [filter, setFilter] = useState<MapFilter>({ namespaces: new Set(), label: "", verdicts: new Set(), protocol: "" });
  const [placed, setPlaced] = useState<Placed | null>(null);
  const [layoutKey, setLayoutKey] = useState("");
  const [hovered, setHovered] = useState("");
  // How many flows the history holds (the relay's ServerStatus, asked beside GetFlows) and
  // whether they have all arrived: the first layout waits for them, so a large map is laid
  // out once with all its workloads, not first with those of the history's first frames.
  const historyWanted = useRef<number | undefined>(undefined);
  const received = useRef(0);
  const [historyIn, setHistoryIn] = useState(false);
  const rf = useRef<ReactFlowInstance | null>(null);
  const userMoved = useRef(false);

  useEffect(() => {
    const ctl = new AbortController();
    const arrived = () => {
      if (historyWanted.current !== undefined && received.current >= historyWanted.current) setHistoryIn(true);
    };
    observer.serverStatus({}, { timeoutMs: 2000, signal: ctl.signal }).then(
      (st) => {
        historyWanted.current = Math.min(Number(st.numFlows), HISTORY);
        arrived();
      },
      () => undefined, // the status bar shows what is wrong; the map waits for quiet instead
    );
    let retry: ReturnType<typeof setTimeout> | undefined;
    const start = () =>
      runStream(
        { filters: { whitelist: [], blacklist: [] }, follow: true, last: HISTORY },
        {
          onBatch: (batch) => {
            if (!graph.current.edges.size) performance.mark("septum:map-first-batch");
            for (const r of batch) {
              if (r.responseTypes.case !== "flow") continue;
              graph.current.add(r.responseTypes.value);
              received.current++;
            }
            arrived();
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

  // Rates fall with time even when no flow comes (a quiet stream re-renders nothing else).
  useEffect(() => {
    const t = setInterval(tick, RATE_WINDOW_MS / 2);
    return () => clearInterval(t);
  }, []);

  const view = visible(graph.current, filter);
  // The graph only grows and `visible` keeps its insertion order, so the edges' ids in order
  // name the drawn structure (the nodes are the edges' ends).
  const structure = view.edges.map((e) => e.id).join("|");

  // Re-layout when the set of nodes/edges changes, at most every LAYOUT_EVERY_MS (and then only
  // the namespaces that changed: MapLayout keeps the others). The first layout waits for the
  // history (historyIn); short of the relay's count, or without it, for the burst to go quiet
  // (COUNTED_QUIET_MS, FIRST_QUIET_MS); at most FIRST_MAX_MS after the first flow.
  const layouter = useRef<MapLayout | null>(null);
  const lastLayout = useRef(0);
  const firstSeen = useRef(0);
  useEffect(() => {
    if (structure === layoutKey || !view.nodes.length) return;
    if (!firstSeen.current) firstSeen.current = Date.now();
    const firstWait = historyIn ? 0 : historyWanted.current === undefined ? FIRST_QUIET_MS : COUNTED_QUIET_MS;
    const wait = placed
      ? Math.max(0, lastLayout.current + LAYOUT_EVERY_MS - Date.now())
      : Math.min(firstWait, Math.max(0, firstSeen.current + FIRST_MAX_MS - Date.now()));
    const t = setTimeout(() => {
      lastLayout.current = Date.now();
      const v = visible(graph.current, filter);
      const key = v.edges.map((e) => e.id).join("|");
      performance.mark("septum:map-layout-start");
      layouter.current ??= mapLayout();
      void layouter.current.layout(v.nodes, v.edges).then((p) => {
        performance.mark("septum:map-layout-end");
        setPlaced(p);
        setLayoutKey(key);
      });
    }, wait);
    return () => clearTimeout(t);
  }, [structure, layoutKey, filter, placed, historyIn]);

  const namespaces = useMemo(
    () => [...new Set([...graph.current.nodes.values()].map((n) => n.namespace).filter(Boolean))].sort(),
    [graph.current.nodes.size],
  );

  const bigMap = view.edges.length > BIG_MAP_EDGES;
  const rfNodes = useMemo(() => (placed ? mapNodes(placed, graph.current.nodes) : []), [placed]);
  const edgeElements = useRef(new EdgeElements());
  // Labels on every edge of a large map cost more to draw than they tell at the zoom it fits
  // at: there, an edge's ports, L7 and rate show when it is hovered.
  const rfEdges = placed ? edgeElements.current.build(view.edges, placed, (e) => !bigMap || hovered === e.id, graph.current.nowMs()) : [];

  useEffect(() => {
    if (!placed) return;
    // A new layout is fitted to the window until the user pans or zooms (the first one by
    // ReactFlow's fitView).
    if (!userMoved.current) void rf.current?.fitView();
    markMapRendered(placed.nodes.size, rfNodes.length, rfEdges.length);
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
          onInit={(instance) => (rf.current = instance)}
          onMoveStart={(event) => {
            if (event) userMoved.current = true;
          }}
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
