// The flow table: Hubble UI's columns, virtualized (only the visible rows are in the DOM),
// live follow or history, pause/resume, export of what is shown as Hubble JSON lines.
import { useVirtualizer } from "@tanstack/react-virtual";
import { useCallback, useEffect, useMemo, useReducer, useRef, useState } from "react";
import { FlowBuffer } from "../model/buffer";
import { FilterError, parseFilters, parseTime, type Filters } from "../model/filters";
import { exportLines, type FlowRow } from "../model/flows";
import { runStream, type StreamQuery } from "../stream";
import { FlowDetail } from "./FlowDetail";
import { markFirstFlow, type Health } from "../health";

const ROW_HEIGHT = 28;
const RENDER_EVERY_MS = 100;

function fmtTime(ms: number): string {
  if (!ms) return "";
  const d = new Date(ms);
  return d.toISOString().replace("T", " ").slice(0, 23);
}

export function FlowTable({ health, initialFilter }: { health: Health; initialFilter: string }) {
  const [filterText, setFilterText] = useState(initialFilter);
  const [applied, setApplied] = useState<{ filters: Filters; text: string }>(() => ({
    filters: safeParse(initialFilter) ?? { whitelist: [], blacklist: [] },
    text: initialFilter,
  }));
  const [filterError, setFilterError] = useState("");
  const [mode, setMode] = useState<"follow" | "history">("follow");
  const [since, setSince] = useState("");
  const [until, setUntil] = useState("");
  const [last, setLast] = useState("1000");
  const [paused, setPaused] = useState(false);
  const [selected, setSelected] = useState<FlowRow | null>(null);
  const [streamState, setStreamState] = useState("connecting");
  const [, tick] = useReducer((n: number) => n + 1, 0);
  const buffer = useRef(new FlowBuffer());
  const lastRender = useRef(0);
  const renderTimer = useRef<ReturnType<typeof setTimeout> | undefined>(undefined);
  const [generation, setGeneration] = useState(0);

  const query = useMemo((): StreamQuery | string => {
    try {
      return {
        filters: applied.filters,
        follow: mode === "follow",
        last: last ? Number(last) : mode === "follow" ? 0 : 20,
        since: mode === "history" && since ? parseTime("since", since) : undefined,
        until: mode === "history" && until ? parseTime("until", until) : undefined,
      };
    } catch (err) {
      return err instanceof Error ? err.message : String(err);
    }
  }, [applied, mode, since, until, last, generation]);

  useEffect(() => {
    if (typeof query === "string") {
      setFilterError(query);
      return;
    }
    if (paused) {
      setStreamState("paused");
      return;
    }
    const ctl = new AbortController();
    buffer.current.clear();
    tick();
    setStreamState(query.follow ? "following" : "loading");
    let retry: ReturnType<typeof setTimeout> | undefined;
    const start = () =>
      runStream(
        query,
        {
          onBatch: (batch) => {
            buffer.current.push(batch);
            markFirstFlow();
            // The first rows at once, then at most RENDER_EVERY_MS: a table redrawn ten times
            // a second reads the same as at sixty, and leaves the frames to scrolling.
            const now = performance.now();
            if (now - lastRender.current >= RENDER_EVERY_MS) {
              lastRender.current = now;
              tick();
            } else if (!renderTimer.current) {
              renderTimer.current = setTimeout(() => {
                renderTimer.current = undefined;
                lastRender.current = performance.now();
                tick();
              }, RENDER_EVERY_MS);
            }
          },
          onLost: (n, source) => health.lost(n, source),
          onNodeStatus: (state, nodes, message) => health.nodeStatus(state, nodes, message),
          onError: (message) => {
            setStreamState(`error: ${message}`);
            health.streamError(message);
            // Following reconnects (the relay restarting is not the end of the story).
            if (query.follow) retry = setTimeout(start, 2000);
          },
          onEnd: () => setStreamState(query.follow ? "ended" : "complete"),
        },
        ctl.signal,
      );
    void start();
    return () => {
      ctl.abort();
      if (retry) clearTimeout(retry);
      if (renderTimer.current) clearTimeout(renderTimer.current);
      renderTimer.current = undefined;
    };
    // Resuming re-reads the last N flows and follows on, so what came during the pause shows.
  }, [query, paused]);

  const apply = useCallback(() => {
    try {
      setApplied({ filters: parseFilters(filterText), text: filterText });
      setFilterError("");
    } catch (err) {
      setFilterError(err instanceof FilterError ? err.message : String(err));
    }
  }, [filterText]);

  const doExport = () => {
    const text = exportLines(buffer.current.allResponses());
    const blob = new Blob([text], { type: "application/x-ndjson" });
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = `septum-flows-${new Date().toISOString().replace(/[:.]/g, "-")}.json`;
    a.click();
    setTimeout(() => URL.revokeObjectURL(a.href), 1000);
  };

  const parentRef = useRef<HTMLDivElement>(null);
  const count = buffer.current.length;
  const virt = useVirtualizer({
    count,
    getScrollElement: () => parentRef.current,
    estimateSize: () => ROW_HEIGHT,
    overscan: 10,
  });

  return (
    <div className="flows">
      <div className="toolbar">
        <input
          className="filter"
          data-testid="flow-filter"
          placeholder="hubble observe filters: --namespace default --verdict DROPPED --to-port 80 --not --pod kube-system/"
          value={filterText}
          onChange={(e) => setFilterText(e.target.value)}
          onKeyDown={(e) => e.key === "Enter" && apply()}
        />
        <button onClick={apply} data-testid="apply-filter">Apply</button>
        <select value={mode} onChange={(e) => setMode(e.target.value as "follow" | "history")} data-testid="mode">
          <option value="follow">Live (follow)</option>
          <option value="history">History</option>
        </select>
        <label>last <input className="num" value={last} onChange={(e) => setLast(e.target.value.replace(/\D/g, ""))} /></label>
        {mode === "history" && (
          <>
            <label>since <input className="time" placeholder="5m or RFC 3339" value={since} onChange={(e) => setSince(e.target.value)} /></label>
            <label>until <input className="time" placeholder="1m or RFC 3339" value={until} onChange={(e) => setUntil(e.target.value)} /></label>
            <button onClick={() => setGeneration((g) => g + 1)}>Reload</button>
          </>
        )}
        <button onClick={() => setPaused((p) => !p)} data-testid="pause">{paused ? "Resume" : "Pause"}</button>
        <button onClick={doExport} data-testid="export">Export JSON</button>
        <span className="muted" data-testid="flow-count">{count} flows · {streamState}</span>
      </div>
      {filterError && <div className="error" data-testid="filter-error">{filterError}</div>}
      <div className="table-and-detail">
        <div className="table" role="table">
          <div className="row head" role="row">
            <span>Source</span><span>Destination</span><span>Destination port</span>
            <span>L7 info</span><span>Verdict</span><span>Timestamp</span>
          </div>
          <div ref={parentRef} className="body" data-testid="flow-rows">
            <div style={{ height: virt.getTotalSize(), position: "relative" }}>
              {virt.getVirtualItems().map((item) => {
                const row = buffer.current.rowNewestFirst(item.index);
                return (
                  <div
                    key={row.key}
                    role="row"
                    data-testid="flow-row"
                    data-verdict={row.verdict}
                    className={`row ${row.verdict.toLowerCase()} ${selected?.key === row.key ? "selected" : ""}`}
                    style={{ transform: `translateY(${item.start}px)`, height: ROW_HEIGHT }}
                    onClick={() => setSelected(row)}
                  >
                    <span title={row.source}>{row.source}</span>
                    <span title={row.destination}>{row.destination}</span>
                    <span>{row.dstPort}</span>
                    <span title={row.l7}>{row.l7}</span>
                    <span className="verdict">{row.verdict}</span>
                    <span>{fmtTime(row.timeMs)}</span>
                  </div>
                );
              })}
            </div>
          </div>
        </div>
        {selected && <FlowDetail row={selected} onClose={() => setSelected(null)} />}
      </div>
    </div>
  );
}

function safeParse(text: string): Filters | undefined {
  try {
    return parseFilters(text);
  } catch {
    return undefined;
  }
}
