package main

import (
	"fmt"
	"strings"
)

// verdicts: one run of each packet from an empty conntrack table, in a connection's order
// (new, established, then a denied port), with the conntrack entries and the events each
// run left: what the tests check and what docs/benchmarks.md lists per packet.
func verdicts(p *Peer, allowed, denied []byte) (map[string]any, error) {
	if err := p.flushConntrack(); err != nil {
		return nil, err
	}
	tally, err := newEventTally(p)
	if err != nil {
		return nil, err
	}
	defer tally.Close()
	out := map[string]any{"tc_act_ok": tcActOK, "tc_act_shot": tcActShot}
	steps := []struct {
		name string
		pkt  []byte
	}{{"new_allow", allowed}, {"established", allowed}, {"deny", denied}}
	for _, step := range steps {
		verdict, _, err := testRun(p.entry, step.pkt, 1)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", step.name, err)
		}
		entries, err := p.conntrackEntries()
		if err != nil {
			return nil, err
		}
		events, err := tally.take()
		if err != nil {
			return nil, err
		}
		out[step.name+"_verdict"] = verdict
		out["conntrack_after_"+step.name] = entries
		out[step.name+"_events"] = events
	}
	return out, nil
}

// bench: every figure without a reader, then every figure with the agent-like reader.
func bench(p *Peer, allowed, denied []byte, repeats, singles int) (map[string]any, error) {
	t := &timer{peer: p}
	figures := map[string]float64{}
	out := map[string]any{}
	for _, suffix := range []string{"", "_reader"} {
		var reader *eventReader
		if suffix == "_reader" {
			var err error
			if reader, err = startEventReader(p); err != nil {
				return nil, err
			}
		}
		set, err := benchSet(t, allowed, denied, repeats, singles, reader != nil)
		if reader != nil {
			out["events_read"], out["events_lost"] = reader.stop()
		}
		if err != nil {
			return nil, err
		}
		for name, value := range set {
			figures[name+suffix] = value
		}
	}
	// one-run figures are differences over the empty program; the same run's repeat-mode
	// baseline puts them on the scale of the repeat-mode figures
	baseline := median(t.baselines)
	out["baseline_ns"] = baseline
	for name, value := range figures {
		if base, ok := strings.CutSuffix(name, "_over_empty"); ok {
			out[base+"_ns"] = value + baseline
		} else if base, ok := strings.CutSuffix(name, "_over_empty_reader"); ok {
			out[base+"_reader_ns"] = value + baseline
		} else {
			out[name+"_ns"] = value
		}
	}
	return out, nil
}

// benchSet: the established path and the deny path repeated in-kernel, then the deny path
// and new connections one run per call. With a reader running, the repeated deny is left
// out: its burst of events (Cilium sends two per denied packet) overruns a perf ring of the
// agent's size, and a lost event costs less than a delivered one.
func benchSet(t *timer, allowed, denied []byte, repeats, singles int, withReader bool) (map[string]float64, error) {
	p := t.peer
	if err := p.flushConntrack(); err != nil {
		return nil, err
	}
	// the first packet of the flow creates its conntrack entry; the rest are established
	if ret, _, err := testRun(p.entry, allowed, 1); err != nil || ret != tcActOK {
		return nil, fmt.Errorf("first allowed packet: verdict %d, %v", ret, err)
	}
	connection, err := p.snapshotConntrack()
	if err != nil {
		return nil, err
	}
	if len(connection.ct4)+len(connection.ctAny4) == 0 {
		return nil, fmt.Errorf("the first allowed packet created no conntrack entry")
	}
	established, err := t.repeated(allowed, repeats, tcActOK)
	if err != nil {
		return nil, fmt.Errorf("established: %w", err)
	}
	figures := map[string]float64{"established": established}
	if !withReader {
		deny, err := t.repeated(denied, repeats, tcActShot)
		if err != nil {
			return nil, fmt.Errorf("deny: %w", err)
		}
		figures["deny"] = deny
	}
	denySingle, err := t.single(denied, singles, tcActShot, noReset)
	if err != nil {
		return nil, fmt.Errorf("deny (one run per call): %w", err)
	}
	newAllow, err := t.single(allowed, singles, tcActOK, func() error { return p.forget(connection) })
	if err != nil {
		return nil, fmt.Errorf("new allow: %w", err)
	}
	figures["deny_single_over_empty"] = mean(denySingle)
	figures["new_allow_over_empty"] = mean(newAllow)
	return figures, nil
}

func noReset() error { return nil }
