package main

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/cilium/ebpf/perf"

	monitorapi "github.com/cilium/cilium/pkg/monitor/api"
)

// eventTally reads, after one test run, the events that run sent, by Cilium's own monitor
// type names (drop, trace, policy-verdict, ...): what each packet costs the agent to read.
type eventTally struct {
	reader *perf.Reader
}

func newEventTally(p *Peer) (*eventTally, error) {
	reader, err := perf.NewReader(p.events, 64*os.Getpagesize())
	if err != nil {
		return nil, fmt.Errorf("perf reader on %s: %w", eventsMap, err)
	}
	return &eventTally{reader: reader}, nil
}

func (e *eventTally) Close() { _ = e.reader.Close() }

// take returns the events waiting now, counted by type name.
func (e *eventTally) take() (map[string]int, error) {
	counts := map[string]int{}
	e.reader.SetDeadline(time.Now())
	var record perf.Record
	for {
		err := e.reader.ReadInto(&record)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return counts, nil
		}
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", eventsMap, err)
		}
		if record.LostSamples > 0 {
			counts["lost"] += int(record.LostSamples)
			continue
		}
		if len(record.RawSample) > 0 {
			counts[monitorapi.MessageTypeName(int(record.RawSample[0]))]++
		}
	}
}
