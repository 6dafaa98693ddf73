// `hubble observe` filter flags -> the GetFlowsRequest's whitelist and blacklist, in the
// browser. The semantics mirror the hubble CLI (and septum.cli.hubble.flags): a flag without
// a side (--pod, --label, --ip, --port) yields a source-side and a destination-side filter,
// --from-*/--to-* go into both, --namespace scopes pods on the matching side, --not negates
// the next flag. Errors name the flag, so the filter bar can say what is wrong.
import { create } from "@bufbuild/protobuf";
import {
  FlowFilterSchema,
  TrafficDirection,
  Verdict,
  type FlowFilter,
} from "../gen/septum/dataplane/observe/api/flow/flow_pb";

export class FilterError extends Error {}

export const VALUE_FLAGS = [
  "namespace", "from-namespace", "to-namespace",
  "pod", "from-pod", "to-pod",
  "label", "from-label", "to-label",
  "ip", "from-ip", "to-ip",
  "port", "from-port", "to-port",
  "verdict", "protocol", "traffic-direction", "node-name",
  "http-status", "http-method", "http-path", "http-url",
] as const;
type ValueFlag = (typeof VALUE_FLAGS)[number];
const VALUE_SET = new Set<string>(VALUE_FLAGS);

const CONFLICTS: string[][] = [
  ["from-ip", "ip", "from-namespace", "namespace"],
  ["from-ip", "ip", "from-pod", "pod"],
  ["to-ip", "ip", "to-namespace", "namespace"],
  ["to-ip", "ip", "to-pod", "pod"],
  ["to-pod", "namespace"],
  ["from-pod", "namespace"],
  ["label", "from-label"],
  ["label", "to-label"],
  ["port", "to-port"],
  ["port", "from-port"],
];

export interface Filters {
  whitelist: FlowFilter[];
  blacklist: FlowFilter[];
}

class Side {
  left: FlowFilter | undefined;
  right: FlowFilter | undefined;
  ns: string[] = [];
  srcNs: string[] = [];
  dstNs: string[] = [];
  changed: string[] = [];

  leftF(): FlowFilter {
    return (this.left ??= create(FlowFilterSchema));
  }
  rightF(): FlowFilter {
    return (this.right ??= create(FlowFilterSchema));
  }
  both(): FlowFilter[] {
    return [this.leftF(), this.rightF()];
  }
  filters(): FlowFilter[] {
    if (!this.left && !this.right && !this.ns.length && !this.srcNs.length && !this.dstNs.length) {
      return [];
    }
    const left = this.leftF();
    const right = this.rightF();
    for (const ff of [left, right]) {
      if (this.dstNs.length) ff.destinationPod = scope(ff.destinationPod, this.dstNs);
      if (this.srcNs.length) ff.sourcePod = scope(ff.sourcePod, this.srcNs);
    }
    if (this.ns.length) {
      left.sourcePod = scope(left.sourcePod, this.ns);
      right.destinationPod = scope(right.destinationPod, this.ns);
    }
    return sameFilter(left, right) ? [left] : [left, right];
  }
}

function sameFilter(a: FlowFilter, b: FlowFilter): boolean {
  const plain = (f: FlowFilter) =>
    JSON.stringify(f, (k, v) => (k === "$typeName" ? undefined : typeof v === "bigint" ? String(v) : v));
  return plain(a) === plain(b);
}

function scope(pods: string[], namespaces: string[]): string[] {
  const current = pods.length ? pods : [""];
  const out: string[] = [];
  for (const name of current) {
    if (name.includes("/")) out.push(name);
    else for (const ns of namespaces) out.push(`${ns}/${name}`);
  }
  return out;
}

function checkPort(flag: string, value: string): void {
  if (!/^\d+$/.test(value) || Number(value) > 65535) {
    throw new FilterError(`--${flag}: invalid port ${JSON.stringify(value)}`);
  }
}

function apply(side: Side, flag: ValueFlag, v: string): void {
  const both = () => side.both();
  switch (flag) {
    case "namespace": side.ns.push(v); return;
    case "from-namespace": side.srcNs.push(v); return;
    case "to-namespace": side.dstNs.push(v); return;
    case "pod": side.leftF().sourcePod.push(v); side.rightF().destinationPod.push(v); return;
    case "from-pod": for (const f of both()) f.sourcePod.push(v); return;
    case "to-pod": for (const f of both()) f.destinationPod.push(v); return;
    case "label": side.leftF().sourceLabel.push(v); side.rightF().destinationLabel.push(v); return;
    case "from-label": for (const f of both()) f.sourceLabel.push(v); return;
    case "to-label": for (const f of both()) f.destinationLabel.push(v); return;
    case "ip": side.leftF().sourceIp.push(v); side.rightF().destinationIp.push(v); return;
    case "from-ip": for (const f of both()) f.sourceIp.push(v); return;
    case "to-ip": for (const f of both()) f.destinationIp.push(v); return;
    case "port":
      checkPort(flag, v);
      side.leftF().sourcePort.push(v);
      side.rightF().destinationPort.push(v);
      return;
    case "from-port": checkPort(flag, v); for (const f of both()) f.sourcePort.push(v); return;
    case "to-port": checkPort(flag, v); for (const f of both()) f.destinationPort.push(v); return;
    case "verdict": {
      const value = (Verdict as unknown as Record<string, number>)[v];
      if (value === undefined || v === "VERDICT_UNKNOWN") {
        const names = Object.keys(Verdict).filter((k) => isNaN(Number(k)) && k !== "VERDICT_UNKNOWN");
        throw new FilterError(`--verdict: invalid value ${JSON.stringify(v)}; one of ${names.join(", ")}`);
      }
      for (const f of both()) f.verdict.push(value);
      return;
    }
    case "protocol": for (const f of both()) f.protocol.push(v); return;
    case "traffic-direction": {
      const d = { ingress: TrafficDirection.INGRESS, egress: TrafficDirection.EGRESS }[v.toLowerCase()];
      if (d === undefined) {
        throw new FilterError(`--traffic-direction: invalid value ${JSON.stringify(v)}; use ingress or egress`);
      }
      for (const f of both()) f.trafficDirection.push(d);
      return;
    }
    case "node-name": for (const f of both()) f.nodeName.push(v); return;
    case "http-status": for (const f of both()) f.httpStatusCode.push(v); return;
    case "http-method": for (const f of both()) f.httpMethod.push(v); return;
    case "http-path": for (const f of both()) f.httpPath.push(v); return;
    case "http-url": for (const f of both()) f.httpUrl.push(v); return;
  }
}

/** Shell-like words: spaces split, single or double quotes group. */
export function words(text: string): string[] {
  const out: string[] = [];
  const re = /"([^"]*)"|'([^']*)'|(\S+)/g;
  let m: RegExpExecArray | null;
  while ((m = re.exec(text)) !== null) out.push(m[1] ?? m[2] ?? m[3]);
  return out;
}

/** Parse `--flag value` / `--flag=value` / `--not --flag value`, as `hubble observe` takes them. */
export function parseFilters(text: string): Filters {
  const white = new Side();
  const black = new Side();
  const tokens = words(text);
  let negate = false;
  for (let i = 0; i < tokens.length; i++) {
    const token = tokens[i];
    if (!token.startsWith("--")) {
      throw new FilterError(`${JSON.stringify(token)}: expected a flag such as --namespace`);
    }
    const eq = token.indexOf("=");
    const name = eq >= 0 ? token.slice(2, eq) : token.slice(2);
    if (name === "not") {
      if (negate) throw new FilterError("--not: two consecutive --not");
      negate = true;
      continue;
    }
    if (!VALUE_SET.has(name)) throw new FilterError(`--${name}: not a filter flag the UI knows`);
    let value: string;
    if (eq >= 0) value = token.slice(eq + 1);
    else if (i + 1 < tokens.length) value = tokens[++i];
    else throw new FilterError(`--${name}: needs a value`);
    const side = negate ? black : white;
    negate = false;
    if (!side.changed.includes(name)) {
      side.changed.push(name);
      for (const group of CONFLICTS) {
        const present = group.filter((f) => side.changed.includes(f));
        if (present.length > 1) {
          throw new FilterError(`filters --${present[0]} and --${present[1]} cannot be combined`);
        }
      }
    }
    apply(side, name as ValueFlag, value);
  }
  if (negate) throw new FilterError("--not: must be followed by a filter flag");
  return { whitelist: white.filters(), blacklist: black.filters() };
}

const DURATION = /^(\d+(?:\.\d+)?)(h|m|s|ms)$/;
const UNIT_MS: Record<string, number> = { h: 3_600_000, m: 60_000, s: 1000, ms: 1 };

/** An RFC 3339 time, or a duration ago (5m, 1h), as hubble's --since/--until. */
export function parseTime(flag: string, value: string, now: number = Date.now()): Date {
  const m = DURATION.exec(value.trim());
  if (m) return new Date(now - Number(m[1]) * UNIT_MS[m[2]]);
  const t = Date.parse(value);
  if (Number.isNaN(t)) {
    throw new FilterError(`--${flag}: ${JSON.stringify(value)} is neither a time (2026-01-02T15:04:05Z) nor a duration (5m)`);
  }
  return new Date(t);
}
