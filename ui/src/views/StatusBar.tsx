import { useEffect, useState } from "react";
import { isStale, useHealth, type Health } from "../health";

export function StatusBar({ health }: { health: Health }) {
  const s = useHealth(health);
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    const t = setInterval(() => setNow(Date.now()), 1000);
    return () => clearInterval(t);
  }, []);
  const stale = isStale(s, now);
  const down = s.nodes.filter((n) => n.state !== "NODE_CONNECTED");
  return (
    <div className="status" data-testid="status">
      <span className={stale ? "bad" : "good"} data-testid="relay-state">
        {stale
          ? `relay stale: ${s.lastAnswerMs ? `no answer for ${Math.round((now - s.lastAnswerMs) / 1000)}s` : "not answering"}${s.lastError ? ` (${s.lastError})` : ""}`
          : "relay ok"}
      </span>
      {s.connected !== undefined && (
        <span className={s.unavailable ? "bad" : "good"} data-testid="nodes-state">
          nodes {s.connected} connected{s.unavailable ? `, ${s.unavailable} unavailable: ${s.unavailableNodes.join(", ")}` : ""}
        </span>
      )}
      {down.length > 0 && (
        <span className="bad">{down.map((n) => `${n.name} ${n.state}`).join(", ")}</span>
      )}
      <span className={s.lostEvents || s.relayLost ? "bad" : "muted"} data-testid="lost-events">
        lost events {s.lostEvents}
        {Object.keys(s.lostBySource).length ? ` (${Object.entries(s.lostBySource).map(([k, v]) => `${k} ${v}`).join(", ")})` : ""}
        {s.relayLost ? `, relay reports ${s.relayLost}` : ""}
      </span>
      <span className="muted">{s.flowsRate ? `${s.flowsRate.toFixed(1)} flows/s · ` : ""}{s.numFlows}/{s.maxFlows} in buffers</span>
      {s.nodeEvents[0] && <span className="muted" title={s.nodeEvents.join("\n")}>{s.nodeEvents[0]}</span>}
    </div>
  );
}
