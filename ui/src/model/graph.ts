// The service map's data: flows folded into workloads (nodes) and who-talks-to-whom (edges),
// kept incrementally so thousands of flows a second cost one map update per flow.
import { Verdict, type Endpoint, type Flow, type Service } from "../gen/septum/dataplane/observe/api/flow/flow_pb";
import { flowTimeMs, l4, reservedName, workloadName } from "./flows";

export interface MapNode {
  id: string;
  namespace: string; // "" for reserved identities and outside addresses
  name: string;
  reserved: boolean;
  labels: string[];
}

export type EdgeVerdict = "forwarded" | "dropped" | "audit" | "mixed";

export interface MapEdge {
  id: string;
  source: string;
  target: string;
  ports: Set<string>; // "80/TCP"
  l7: Set<string>; // "GET /v1/request-landing"
  forwarded: number;
  dropped: number;
  audit: number;
  lastMs: number;
  // flows in the current and previous rate windows, for flows per second
  windowStart: number;
  windowCount: number;
  rate: number;
}

export const RATE_WINDOW_MS = 10_000;

export function nodeFor(ep: Endpoint | undefined, ip: string, service?: Service): MapNode {
  const reserved = reservedName(ep);
  if (!ep?.podName && service?.name) {
    // A Service's frontend address, before translation: the Service is the node, in its
    // namespace, rather than a bare ClusterIP outside the cluster.
    const id = `svc:${service.namespace}/${service.name}`;
    return { id, namespace: service.namespace, name: `service ${service.name}`, reserved: false, labels: [] };
  }
  if (ep?.podName) {
    const name = workloadName(ep);
    return { id: `${ep.namespace}/${name}`, namespace: ep.namespace, name, reserved: false, labels: ep.labels };
  }
  if (reserved) return { id: `reserved:${reserved}`, namespace: "", name: reserved, reserved: true, labels: ep?.labels ?? [] };
  return { id: `ip:${ip}`, namespace: "", name: ip || "unknown", reserved: true, labels: [] };
}

export function edgeVerdict(e: MapEdge): EdgeVerdict {
  const kinds = [e.forwarded > 0, e.dropped > 0, e.audit > 0].filter(Boolean).length;
  if (kinds > 1) return "mixed";
  if (e.dropped) return "dropped";
  if (e.audit) return "audit";
  return "forwarded";
}

export const VERDICT_COLOURS: Record<EdgeVerdict, string> = {
  forwarded: "#2e9e44",
  dropped: "#d93025",
  audit: "#e8a400",
  mixed: "#e46c0a",
};

/** Flows per second on the edge now: its last full window's rate, or 0 once the edge has been
 * quiet for a window (`nowMs`: now on the flows' clock, ServiceGraph.nowMs). */
export function rateNow(e: MapEdge, nowMs: number): number {
  return nowMs - e.lastMs > RATE_WINDOW_MS ? 0 : e.rate;
}

export class ServiceGraph {
  nodes = new Map<string, MapNode>();
  edges = new Map<string, MapEdge>();
  version = 0;
  newestMs = 0; // the newest flow's time
  // The browser's clock minus the flows' clock, taken when the newest flow arrived: the nodes'
  // clocks and the browser's need not agree, and history arrives long after its flows' times,
  // so "now" is the newest flow's time moved on by the wall time since it came. The newest
  // flow's time alone stood still when the whole stream went quiet, and with it every rate.
  private offsetMs = 0;

  /** `wallMs`: the browser's clock (Date.now), injected so tests need no real waiting. */
  constructor(private readonly wallMs: () => number = Date.now) {}

  /** Now on the flows' clock: the newest flow's time plus the wall time since it arrived. */
  nowMs(): number {
    return this.newestMs ? this.wallMs() - this.offsetMs : 0;
  }

  add(f: Flow): void {
    // Replies travel the other way on the same connection: the request already drew the edge.
    if (f.isReply ?? f.reply) return;
    const src = nodeFor(f.source, f.IP?.source ?? "", f.sourceService);
    const dst = nodeFor(f.destination, f.IP?.destination ?? "", f.destinationService);
    if (!this.nodes.has(src.id)) this.nodes.set(src.id, src);
    if (!this.nodes.has(dst.id)) this.nodes.set(dst.id, dst);
    const id = `${src.id}->${dst.id}`;
    let e = this.edges.get(id);
    const t = flowTimeMs(f);
    if (!e) {
      e = {
        id, source: src.id, target: dst.id, ports: new Set(), l7: new Set(),
        forwarded: 0, dropped: 0, audit: 0, lastMs: t, windowStart: t, windowCount: 0, rate: 0,
      };
      this.edges.set(id, e);
    }
    const info = l4(f);
    if (info.dstPort !== undefined) e.ports.add(`${info.dstPort}/${info.protocol}`);
    else if (info.protocol) e.ports.add(info.protocol);
    const rec = f.l7?.record;
    if (rec?.case === "http") e.l7.add(`${rec.value.method} ${pathOf(rec.value.url)}`);
    else if (rec?.case === "dns") e.l7.add(`DNS ${rec.value.query}`);
    if (f.verdict === Verdict.FORWARDED) e.forwarded++;
    else if (f.verdict === Verdict.DROPPED || f.verdict === Verdict.ERROR) e.dropped++;
    else if (f.verdict === Verdict.AUDIT) e.audit++;
    if (t - e.windowStart >= RATE_WINDOW_MS) {
      e.rate = e.windowCount / ((t - e.windowStart) / 1000);
      e.windowStart = t;
      e.windowCount = 0;
    }
    e.windowCount++;
    e.lastMs = Math.max(e.lastMs, t);
    if (t >= this.newestMs) {
      this.newestMs = t;
      this.offsetMs = this.wallMs() - t;
    }
    this.version++;
  }

  clear(): void {
    this.nodes.clear();
    this.edges.clear();
    this.version++;
  }
}

function pathOf(url: string): string {
  try {
    return new URL(url).pathname;
  } catch {
    return url;
  }
}

export interface MapFilter {
  namespaces: Set<string>; // empty = every namespace
  label: string; // "key=value" substring of a node's labels, "" = any
  verdicts: Set<EdgeVerdict>; // empty = any
  protocol: string; // "TCP", "UDP", ... "" = any
}

/** The nodes and edges the filter keeps: an edge stays when one end is in a chosen namespace
 * (so traffic to world or another namespace still shows), and nodes are the edges' ends. */
export function visible(g: ServiceGraph, filter: MapFilter): { nodes: MapNode[]; edges: MapEdge[] } {
  const edges: MapEdge[] = [];
  const keep = new Set<string>();
  const nodeOk = (n: MapNode | undefined) =>
    !!n && (!filter.namespaces.size || filter.namespaces.has(n.namespace)) &&
    (!filter.label || n.labels.some((l) => l.includes(filter.label)));
  for (const e of g.edges.values()) {
    const s = g.nodes.get(e.source);
    const t = g.nodes.get(e.target);
    if (!nodeOk(s) && !nodeOk(t)) continue;
    if (filter.verdicts.size && !filter.verdicts.has(edgeVerdict(e))) continue;
    if (filter.protocol && ![...e.ports].some((p) => p.endsWith(`/${filter.protocol}`) || p === filter.protocol)) continue;
    edges.push(e);
    keep.add(e.source);
    keep.add(e.target);
  }
  const nodes = [...keep].map((id) => g.nodes.get(id)!).filter(Boolean);
  return { nodes, edges };
}
