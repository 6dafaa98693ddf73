// One GetFlows stream from the relay, batched into animation frames: a thousand flows a
// second become ~60 renders a second, not a thousand.
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { ConnectError } from "@connectrpc/connect";
import { observer } from "./api";
import {
  GetFlowsRequestSchema,
  type GetFlowsResponse,
} from "./gen/septum/dataplane/observe/api/observer/observer_pb";
import type { Filters } from "./model/filters";
import { LostEventSource } from "./gen/septum/dataplane/observe/api/flow/flow_pb";
import { NodeState } from "./gen/septum/dataplane/observe/api/relay/relay_pb";

export interface StreamQuery {
  filters: Filters;
  follow: boolean;
  last?: number; // history: the last N flows (with follow: N before following)
  since?: Date;
  until?: Date;
}

export interface StreamEvents {
  onBatch: (batch: GetFlowsResponse[]) => void;
  onLost: (count: number, source: string) => void;
  onNodeStatus: (state: string, nodes: string[], message: string) => void;
  onError: (message: string) => void;
  onEnd: () => void;
}

export function requestFor(q: StreamQuery) {
  return create(GetFlowsRequestSchema, {
    follow: q.follow,
    number: BigInt(q.last ?? 0),
    whitelist: q.filters.whitelist,
    blacklist: q.filters.blacklist,
    since: q.since ? timestampFromMs(q.since.getTime()) : undefined,
    until: q.until ? timestampFromMs(q.until.getTime()) : undefined,
  });
}

/** Run the stream until `signal` aborts; returns when it ends or fails. */
export async function runStream(q: StreamQuery, ev: StreamEvents, signal: AbortSignal): Promise<void> {
  let pending: GetFlowsResponse[] = [];
  let scheduled = false;
  const flush = () => {
    scheduled = false;
    if (!pending.length) return;
    const batch = pending;
    pending = [];
    ev.onBatch(batch);
  };
  const schedule = () => {
    if (scheduled) return;
    scheduled = true;
    // rAF stops in a hidden tab; a timer keeps the buffer bounded there too.
    if (document.visibilityState === "visible") requestAnimationFrame(flush);
    else setTimeout(flush, 250);
  };
  try {
    for await (const resp of observer.getFlows(requestFor(q), { signal })) {
      const t = resp.responseTypes;
      if (t.case === "flow") {
        pending.push(resp);
        schedule();
      } else if (t.case === "lostEvents") {
        ev.onLost(Number(t.value.numEventsLost), LostEventSource[t.value.source] ?? String(t.value.source));
      } else if (t.case === "nodeStatus") {
        ev.onNodeStatus(NodeState[t.value.stateChange] ?? String(t.value.stateChange), t.value.nodeNames, t.value.message);
      }
    }
    flush();
    ev.onEnd();
  } catch (err) {
    flush();
    if (signal.aborted) return;
    ev.onError(err instanceof ConnectError ? `${err.code}: ${err.rawMessage}` : String(err));
  }
}
