// Everything a Flow carries, and why it got its verdict.
import { useEffect, useState, type ReactNode } from "react";
import { Code, ConnectError } from "@connectrpc/connect";
import { policies } from "../api";
import {
  TraceObservationPoint,
  TrafficDirection,
  type Endpoint,
} from "../gen/septum/dataplane/observe/api/flow/flow_pb";
import {
  dropReasonText,
  l4,
  policyRef,
  tcpFlags,
  why,
  type FlowRow,
} from "../model/flows";
import { explainArgs, ruleNow, type RuleNow } from "../model/rulenow";

// Set once Explain answered that the UI has no policies to explain with (no cluster access,
// no -f): the detail then stops asking.
let noPolicyService = false;

/** The deciding rule of the flow's connection as the policies are now (Explain), or nothing
 * while it is asked, when it cannot be asked, or when the UI has no PolicyService. `state`
 * tells which ("asking", "shown", "none"), for the page's tests. */
function useRuleNow(row: FlowRow): { rules: RuleNow[]; state: string } {
  const [now, setNow] = useState<{ rules: RuleNow[]; state: string }>({ rules: [], state: "asking" });
  useEffect(() => {
    const args = explainArgs(row.flow);
    if (!args || noPolicyService) {
      setNow({ rules: [], state: "none" });
      return;
    }
    setNow({ rules: [], state: "asking" });
    const ctl = new AbortController();
    policies.explain(args, { signal: ctl.signal, timeoutMs: 10_000 }).then(
      (r) => setNow({ rules: ruleNow(row.flow, r), state: "shown" }),
      (err: unknown) => {
        // Not an error to show: the flow's own "why" above stands without it. A UI without
        // policy access stops asking; a pod gone since the flow just gets no line.
        const code = ConnectError.from(err).code;
        if (code === Code.Unimplemented || code === Code.Unavailable || code === Code.FailedPrecondition) noPolicyService = true;
        if (!ctl.signal.aborted) setNow({ rules: [], state: "none" });
      },
    );
    return () => ctl.abort();
  }, [row]);
  return now;
}

function Field({ name, children }: { name: string; children: ReactNode }) {
  if (children === "" || children === undefined || children === null) return null;
  return (
    <div className="field">
      <span className="name">{name}</span>
      <span className="value">{children}</span>
    </div>
  );
}

function EndpointFields({ title, ep, ip, port }: { title: string; ep?: Endpoint; ip: string; port?: number }) {
  return (
    <section>
      <h4>{title}</h4>
      <Field name="pod">{ep?.podName}</Field>
      <Field name="namespace">{ep?.namespace}</Field>
      <Field name="workload">{ep?.workloads.map((w) => `${w.kind}/${w.name}`).join(", ")}</Field>
      <Field name="identity">{ep ? String(ep.identity) : ""}</Field>
      <Field name="IP">{ip}</Field>
      <Field name="port">{port !== undefined ? String(port) : ""}</Field>
      <Field name="cluster">{ep?.clusterName}</Field>
      <Field name="labels">{ep?.labels.length ? <ul>{ep.labels.map((l) => <li key={l}>{l}</li>)}</ul> : ""}</Field>
    </section>
  );
}

export function FlowDetail({ row, onClose }: { row: FlowRow; onClose: () => void }) {
  const f = row.flow;
  const info = l4(f);
  const w = why(f);
  const rec = f.l7?.record;
  const { rules: rulesNow, state: ruleState } = useRuleNow(row);
  return (
    <aside className="detail" data-testid="flow-detail">
      <header>
        <h3>Flow</h3>
        <button onClick={onClose}>close</button>
      </header>
      <section className={`why ${row.verdict.toLowerCase()}`} data-testid="flow-why" data-rule-now={ruleState}>
        <h4>Why: {row.verdict}</h4>
        <p>{w.summary}</p>
        {f.source?.podName && f.destination?.podName && info.dstPort !== undefined && (
          <p><a
            data-testid="explain-link"
            href={`#/policy?${new URLSearchParams({
              from: `${f.source.namespace}/${f.source.podName}`,
              to: `${f.destination.namespace}/${f.destination.podName}`,
              port: String(info.dstPort),
              protocol: info.protocol,
            })}`}
          >
            Explain this connection with the policies now
          </a></p>
        )}
        {rulesNow.map((r) => (
          <div key={r.direction} className="rule-now" data-testid="flow-rule-now">
            Deciding rule on {r.direction}, as the policies are now: {r.reason}
            {r.policy ? ` (${r.policy}${r.tier ? `, tier ${r.tier}` : ""}: ${r.verdict})` : ` (${r.verdict})`}
            {r.differs && <div className="differs">Changed since this flow: {r.differs}</div>}
          </div>
        ))}
        {w.policies.map((p, i) => (
          <div key={i} className="policy">
            <a href={`#/policy?${new URLSearchParams({ name: p.policy.name, workload: `${(p.direction === "ingress" ? f.destination : f.source)?.namespace ?? ""}/${(p.direction === "ingress" ? f.destination : f.source)?.podName ?? ""}` })}`}>
              {policyRef(p.policy)}
            </a>{" "}
            — {p.effect} on {p.direction}, tier {p.tier}
            {p.policy.revision ? `, revision ${p.policy.revision}` : ""}
            {w.defaultDeny && p.effect === "denied" ? " (default deny: the policy isolates the endpoint and no rule allows)" : ""}
          </div>
        ))}
      </section>
      <section>
        <h4>Summary</h4>
        <Field name="time">{new Date(row.timeMs).toISOString()}</Field>
        <Field name="verdict">{row.verdict}</Field>
        <Field name="drop reason">{f.dropReasonDesc ? dropReasonText(f.dropReasonDesc, f.dropReason) : ""}</Field>
        <Field name="direction">{TrafficDirection[f.trafficDirection]}</Field>
        <Field name="observed at">{TraceObservationPoint[f.traceObservationPoint]}</Field>
        <Field name="node">{f.nodeName}</Field>
        <Field name="protocol">{info.protocol}</Field>
        <Field name="TCP flags">{tcpFlags(f).join(", ")}</Field>
        <Field name="reply">{String(f.isReply ?? f.reply)}</Field>
        <Field name="summary">{f.Summary}</Field>
        <Field name="uuid">{f.uuid}</Field>
      </section>
      <EndpointFields title="Source" ep={f.source} ip={f.IP?.source ?? ""} port={info.srcPort} />
      <EndpointFields title="Destination" ep={f.destination} ip={f.IP?.destination ?? ""} port={info.dstPort} />
      {f.destinationService?.name && (
        <section><h4>Service</h4><Field name="destination">{`${f.destinationService.namespace}/${f.destinationService.name}`}</Field></section>
      )}
      {rec?.case === "http" && (
        <section>
          <h4>HTTP</h4>
          <Field name="method">{rec.value.method}</Field>
          <Field name="URL">{rec.value.url}</Field>
          <Field name="status">{rec.value.code ? String(rec.value.code) : ""}</Field>
          <Field name="protocol">{rec.value.protocol}</Field>
          <Field name="latency">{f.l7?.latencyNs ? `${Number(f.l7.latencyNs) / 1e6} ms` : ""}</Field>
        </section>
      )}
      {rec?.case === "dns" && (
        <section>
          <h4>DNS</h4>
          <Field name="query">{rec.value.query}</Field>
          <Field name="answers">{rec.value.ips.join(", ")}</Field>
          <Field name="rcode">{String(rec.value.rcode)}</Field>
          <Field name="types">{rec.value.qtypes.join(", ")}</Field>
        </section>
      )}
    </aside>
  );
}
