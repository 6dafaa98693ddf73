package main

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"

	"github.com/cilium/ebpf/perf"

	"github.com/cilium/cilium/pkg/defaults"
)

// eventReader stands for the agent's monitor: a perf reader on cilium_events sized as the
// agent sizes it (defaults.MonitorBufferPages per CPU) with the library's default wake-up
// (every event), read in a loop by its own goroutine, as pkg/monitor/agent does.
type eventReader struct {
	reader *perf.Reader
	done   sync.WaitGroup
	events atomic.Uint64
	lost   atomic.Uint64
}

func startEventReader(p *Peer) (*eventReader, error) {
	reader, err := perf.NewReader(p.events, os.Getpagesize()*defaults.MonitorBufferPages)
	if err != nil {
		return nil, fmt.Errorf("perf reader on %s: %w", eventsMap, err)
	}
	r := &eventReader{reader: reader}
	r.done.Add(1)
	go r.loop()
	return r, nil
}

func (r *eventReader) loop() {
	defer r.done.Done()
	var record perf.Record
	for {
		if err := r.reader.ReadInto(&record); err != nil {
			if errors.Is(err, perf.ErrFlushed) || errors.Is(err, perf.ErrClosed) {
				return
			}
			continue
		}
		if record.LostSamples > 0 {
			r.lost.Add(record.LostSamples)
			continue
		}
		r.events.Add(1)
	}
}

// stop lets the loop read what the rings hold now (Flush), then closes the reader; returns
// (events read, events lost).
func (r *eventReader) stop() (uint64, uint64) {
	if err := r.reader.Flush(); err != nil {
		_ = r.reader.Close() // the loop ends on ErrClosed instead
	}
	r.done.Wait()
	_ = r.reader.Close()
	return r.events.Load(), r.lost.Load()
}
