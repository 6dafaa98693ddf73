// What the status bar shows, never hidden: the relay's answers (or their absence: a stale
// relay), connected and unavailable nodes, events lost on the way. Also the page's own timing
// marks, which `septum bench ui` reads.
import { useEffect, useReducer } from "react";
import { observer } from "./api";
import { NodeState } from "./gen/septum/dataplane/observe/api/relay/relay_pb";

export interface NodeInfo {
  name: string;
  state: string;
}

export interface HealthState {
  lastAnswerMs: number; // when the relay last answered ServerStatus
  lastError: string;
  connected?: number;
  unavailable?: number;
  unavailableNodes: string[];
  nodes: NodeInfo[];
  numFlows: number;
  maxFlows: number;
  flowsRate: number;
  lostEvents: number;
  lostBySource: Record<string, number>;
  relayLost: number; // the relay's own count (ServerStatus.septum_lost_events)
  nodeEvents: string[];
}

type Listener = () => void;

export const STALE_AFTER_MS = 10_000;
const POLL_MS = 3000;

export class Health {
  state: HealthState = {
    lastAnswerMs: 0, lastError: "", unavailableNodes: [], nodes: [], numFlows: 0, maxFlows: 0,
    flowsRate: 0, lostEvents: 0, lostBySource: {}, relayLost: 0, nodeEvents: [],
  };
  private listeners = new Set<Listener>();
  private timer: ReturnType<typeof setInterval> | undefined;

  subscribe(l: Listener): () => void {
    this.listeners.add(l);
    return () => this.listeners.delete(l);
  }

  private set(patch: Partial<HealthState>): void {
    this.state = { ...this.state, ...patch };
    for (const l of this.listeners) l();
  }

  lost(count: number, source: string): void {
    const by = { ...this.state.lostBySource, [source]: (this.state.lostBySource[source] ?? 0) + count };
    this.set({ lostEvents: this.state.lostEvents + count, lostBySource: by });
  }

  nodeStatus(state: string, nodes: string[], message: string): void {
    const line = `${new Date().toISOString().slice(11, 19)} ${state} ${nodes.join(", ")}${message ? `: ${message}` : ""}`;
    this.set({ nodeEvents: [line, ...this.state.nodeEvents].slice(0, 20) });
  }

  streamError(message: string): void {
    this.set({ lastError: message });
  }

  start(): void {
    if (this.timer) return;
    void this.poll();
    this.timer = setInterval(() => void this.poll(), POLL_MS);
  }

  private async poll(): Promise<void> {
    try {
      const s = await observer.serverStatus({}, { timeoutMs: 2500 });
      let nodes = this.state.nodes;
      try {
        const n = await observer.getNodes({}, { timeoutMs: 2500 });
        nodes = n.nodes.map((x) => ({ name: x.name, state: NodeState[x.state] ?? String(x.state) }));
      } catch {
        // ServerStatus answered: a single agent has no GetNodes worth showing.
      }
      this.set({
        lastAnswerMs: Date.now(),
        lastError: "",
        connected: s.numConnectedNodes,
        unavailable: s.numUnavailableNodes,
        unavailableNodes: s.unavailableNodes,
        numFlows: Number(s.numFlows),
        maxFlows: Number(s.maxFlows),
        flowsRate: s.flowsRate,
        relayLost: s.septumLostEvents.reduce((a, e) => a + Number(e.numEventsLost), 0),
        nodes,
      });
    } catch (err) {
      this.set({ lastError: err instanceof Error ? err.message : String(err) });
    }
  }
}

export const health = new Health();

export function useHealth(h: Health): HealthState {
  const [, tick] = useReducer((n: number) => n + 1, 0);
  useEffect(() => h.subscribe(tick), [h]);
  return h.state;
}

/** The relay is stale when it has not answered ServerStatus for a while (or never). */
export function isStale(s: HealthState, now: number = Date.now()): boolean {
  return !s.lastAnswerMs || now - s.lastAnswerMs > STALE_AFTER_MS;
}

// Timing marks for `septum bench ui` (and anyone curious): ms since navigation start.
interface Marks {
  firstFlowMs?: number;
  mapRenderedMs?: number;
  mapNodes?: number; // workloads drawn
  mapEdges?: number;
}
declare global {
  interface Window {
    __septum: Marks;
  }
}
window.__septum = window.__septum ?? {};

let firstFlowPending = false;

/** The first flow row is on screen: marked after the frame that paints it. */
export function markFirstFlow(): void {
  if (window.__septum.firstFlowMs !== undefined || firstFlowPending) return;
  firstFlowPending = true;
  requestAnimationFrame(() =>
    setTimeout(() => {
      window.__septum.firstFlowMs = performance.now();
    }, 0),
  );
}

/** The laid-out map is on screen: marked after the first frame in which the page holds all
 * its nodes and edges (React Flow draws them from its store, a render after ours). */
export function markMapRendered(workloads: number, nodes: number, edges: number): void {
  const drawnNodes = document.getElementsByClassName("react-flow__node");
  const drawnEdges = document.getElementsByClassName("react-flow__edge");
  const check = (frames: number) => {
    if ((drawnNodes.length < nodes || drawnEdges.length < edges) && frames < 600) {
      requestAnimationFrame(() => check(frames + 1));
      return;
    }
    setTimeout(() => {
      window.__septum.mapRenderedMs = performance.now();
      window.__septum.mapNodes = workloads;
      window.__septum.mapEdges = drawnEdges.length;
    }, 0);
  };
  requestAnimationFrame(() => check(0));
}
