import { describe, expect, it } from "vitest";
import { TrafficDirection, Verdict } from "../gen/septum/dataplane/observe/api/flow/flow_pb";
import { FilterError, parseFilters, parseTime, words } from "./filters";

describe("hubble observe flags in the filter bar", () => {
  it("a side-less flag makes a source filter and a destination filter", () => {
    const { whitelist, blacklist } = parseFilters("--pod default/xwing");
    expect(whitelist.map((f) => [f.sourcePod, f.destinationPod])).toEqual([
      [["default/xwing"], []],
      [[], ["default/xwing"]],
    ]);
    expect(blacklist).toEqual([]);
  });

  it("--from/--to flags and values AND/OR as in hubble, --namespace scopes pods", () => {
    const { whitelist } = parseFilters("--from-pod xwing --to-pod deathstar --verdict DROPPED --verdict AUDIT --namespace default".replace("--namespace default", "--to-namespace default"));
    expect(whitelist).toHaveLength(1);
    expect(whitelist[0].sourcePod).toEqual(["xwing"]);
    expect(whitelist[0].destinationPod).toEqual(["default/deathstar"]);
    expect(whitelist[0].verdict).toEqual([Verdict.DROPPED, Verdict.AUDIT]);
    const ns = parseFilters("--namespace kube-system").whitelist;
    expect(ns.map((f) => [f.sourcePod, f.destinationPod])).toEqual([[["kube-system/"], []], [[], ["kube-system/"]]]);
  });

  it("--not negates the next flag into the blacklist", () => {
    const { whitelist, blacklist } = parseFilters("--traffic-direction ingress --not --to-port=53");
    expect(whitelist[0].trafficDirection).toEqual([TrafficDirection.INGRESS]);
    expect(blacklist).toHaveLength(1);
    expect(blacklist[0].destinationPort).toEqual(["53"]);
  });

  it("HTTP fields and quoted values", () => {
    expect(words(`--http-path "/v1/request landing" --http-method POST`)).toEqual(["--http-path", "/v1/request landing", "--http-method", "POST"]);
    const f = parseFilters(`--http-path '/v1/.*' --http-status 5+ --protocol http`).whitelist[0];
    expect([f.httpPath, f.httpStatusCode, f.protocol]).toEqual([["/v1/.*"], ["5+"], ["http"]]);
  });

  it("bad input is refused naming the flag", () => {
    const cases: [string, string][] = [
      ["--verdict NOPE", "--verdict: invalid value"],
      ["--to-port 70000", "--to-port: invalid port"],
      ["--pod", "--pod: needs a value"],
      ["--colour red", "--colour: not a filter flag"],
      ["xwing", "expected a flag"],
      ["--not", "--not: must be followed"],
      ["--port 80 --to-port 80", "filters --port and --to-port cannot be combined"],
      ["--traffic-direction sideways", "--traffic-direction: invalid value"],
    ];
    for (const [text, msg] of cases) {
      expect(() => parseFilters(text), text).toThrow(FilterError);
      expect(() => parseFilters(text), text).toThrow(msg);
    }
  });

  it("since/until take a duration ago or an RFC 3339 time", () => {
    expect(parseTime("since", "5m", 1_000_000).getTime()).toBe(1_000_000 - 300_000);
    expect(parseTime("until", "2026-01-02T15:04:05Z").toISOString()).toBe("2026-01-02T15:04:05.000Z");
    expect(() => parseTime("since", "yesterday")).toThrow("--since:");
  });
});
