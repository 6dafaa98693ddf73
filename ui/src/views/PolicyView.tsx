// The Policy view: the policies that select a workload, explain for any source, destination
// and port, and what-if for a pasted candidate policy set replayed against recent flows.
import { ConnectError } from "@connectrpc/connect";
import { useEffect, useState } from "react";
import { policies } from "../api";
import type {
  ExplainResponse,
  PolicyRef,
  WhatIfResponse,
} from "../gen/septum/ui/api/v1/policy_pb";

function message(err: unknown): string {
  return err instanceof ConnectError ? err.rawMessage : String(err);
}

export function PolicyView({ params }: { params: URLSearchParams }) {
  const [workload, setWorkload] = useState(params.get("workload") ?? "");
  const [selecting, setSelecting] = useState<PolicyRef[] | null>(null);
  const [listError, setListError] = useState("");
  const [from, setFrom] = useState(params.get("from") ?? "");
  const [to, setTo] = useState(params.get("to") ?? "");
  const [port, setPort] = useState(params.get("port") ?? "80");
  const [protocol, setProtocol] = useState(params.get("protocol") ?? "TCP");
  const [explained, setExplained] = useState<ExplainResponse | null>(null);
  const [explainError, setExplainError] = useState("");
  const [manifests, setManifests] = useState("");
  const [since, setSince] = useState("1h");
  const [whatIf, setWhatIf] = useState<WhatIfResponse | null>(null);
  const [whatIfError, setWhatIfError] = useState("");
  const [busy, setBusy] = useState("");
  const highlight = params.get("name");

  const list = async () => {
    setListError("");
    try {
      setSelecting((await policies.listPolicies({ workload })).policies);
    } catch (err) {
      setListError(message(err));
    }
  };
  const doExplain = async () => {
    setExplainError("");
    setExplained(null);
    try {
      setExplained(await policies.explain({ source: from, destination: to, port: Number(port), protocol }));
    } catch (err) {
      setExplainError(message(err));
    }
  };
  const doWhatIf = async () => {
    setWhatIfError("");
    setWhatIf(null);
    setBusy("replaying the recent flows…");
    try {
      setWhatIf(await policies.whatIf({ manifests, since }));
    } catch (err) {
      setWhatIfError(message(err));
    } finally {
      setBusy("");
    }
  };

  useEffect(() => {
    void list();
    if (params.get("from") && params.get("to")) void doExplain();
    // Run once for the parameters the page was opened with (a flow's "explain" link).
  }, []);

  return (
    <div className="policy-view">
      <section>
        <h3>Policies</h3>
        <div className="toolbar">
          <input placeholder="workload: ns/pod (empty: every policy)" value={workload} onChange={(e) => setWorkload(e.target.value)} data-testid="policy-workload" />
          <button onClick={list}>List</button>
        </div>
        {listError && <div className="error" data-testid="policy-error">{listError}</div>}
        {selecting && (
          <table data-testid="policy-list">
            <thead><tr><th>Kind</th><th>Namespace</th><th>Name</th><th>Tier</th></tr></thead>
            <tbody>
              {selecting.map((p) => (
                <tr key={`${p.kind}/${p.namespace}/${p.name}`} className={p.name === highlight ? "selected" : ""}>
                  <td>{p.kind}</td><td>{p.namespace}</td><td>{p.name}</td><td>{p.tier}</td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </section>
      <section>
        <h3>Explain</h3>
        <div className="toolbar">
          <input placeholder="from: ns/pod, IP, host:NODE or ns:key=value" value={from} onChange={(e) => setFrom(e.target.value)} data-testid="explain-from" />
          <input placeholder="to" value={to} onChange={(e) => setTo(e.target.value)} data-testid="explain-to" />
          <input className="num" value={port} onChange={(e) => setPort(e.target.value.replace(/\D/g, ""))} />
          <select value={protocol} onChange={(e) => setProtocol(e.target.value)}>
            <option>TCP</option><option>UDP</option><option>SCTP</option><option>ICMP</option><option>ICMPv6</option>
          </select>
          <button onClick={doExplain} data-testid="explain">Explain</button>
        </div>
        {explainError && <div className="error" data-testid="explain-error">{explainError}</div>}
        {explained && (
          <div className={`why ${explained.allowed ? "forwarded" : "dropped"}`} data-testid="explain-result">
            <pre>{explained.summary}</pre>
            <table>
              <thead><tr><th>Direction</th><th>Verdict</th><th>Tier</th><th>Policy</th><th>Reason</th></tr></thead>
              <tbody>
                {explained.directions.map((d) => (
                  <tr key={d.direction}>
                    <td>{d.direction}</td>
                    <td>{!d.enforced ? "not enforced" : d.audit ? "audit" : d.allowed ? "allowed" : "denied"}</td>
                    <td>{d.tier}</td><td>{d.policy}</td><td>{d.reason}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        )}
      </section>
      <section>
        <h3>What if</h3>
        <textarea
          rows={12}
          placeholder="Paste candidate policies (YAML): they replace policies of the same kind and name"
          value={manifests}
          onChange={(e) => setManifests(e.target.value)}
          data-testid="whatif-manifests"
        />
        <div className="toolbar">
          <label>flows since <input className="time" value={since} onChange={(e) => setSince(e.target.value)} /></label>
          <button onClick={doWhatIf} data-testid="whatif">Replay recent flows</button>
          <span className="muted">{busy}</span>
        </div>
        {whatIfError && <div className="error" data-testid="whatif-error">{whatIfError}</div>}
        {whatIf && (
          <div data-testid="whatif-result">
            <p>{whatIf.summary}</p>
            {whatIf.notes.map((n) => <p key={n} className="muted">{n}</p>)}
            <table>
              <thead><tr><th>Source</th><th>Destination</th><th>Port</th><th>Flows</th><th>Now</th><th>With the candidate</th></tr></thead>
              <tbody>
                {whatIf.changed.map((c, i) => (
                  <tr key={i} data-testid="whatif-row">
                    <td>{c.source}</td><td>{c.destination}</td><td>{c.port}/{c.protocol}</td><td>{String(c.flows)}</td>
                    <td title={c.current?.decidedBy.join("\n")}>{c.current?.allowed ? "ALLOWED" : "DENIED"}</td>
                    <td title={c.candidate?.decidedBy.join("\n")}>{c.candidate?.allowed ? "ALLOWED" : "DENIED"}: {c.candidate?.decidedBy.join("; ")}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        )}
      </section>
    </div>
  );
}
