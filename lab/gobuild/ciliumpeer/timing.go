package main

import (
	"fmt"
	"slices"
	"time"

	"github.com/cilium/ebpf"
)

// chunks: as Septum's bench, a repeat-mode figure is the median of 5 chunk averages, each
// chunk preceded by a chunk of the empty program (the same-run baseline).
const chunks = 5

// TC verdicts as BPF_PROG_TEST_RUN returns them.
const (
	tcActOK   = 0
	tcActShot = 2
)

type timer struct {
	peer      *Peer
	baselines []float64 // ns per run of the empty program, every chunk of every figure
}

func testRun(prog *ebpf.Program, pkt []byte, repeat int) (uint32, time.Duration, error) {
	ret, perRun, err := prog.Benchmark(pkt, repeat, nil)
	if err != nil {
		return 0, 0, fmt.Errorf("BPF_PROG_TEST_RUN: %w", err)
	}
	return ret, perRun, nil
}

// repeated: ns per run of the entry program, the packet repeated in-kernel.
func (t *timer) repeated(pkt []byte, repeats int, want uint32) (float64, error) {
	chunk := max(repeats/chunks, 1)
	var perRun []float64
	for range chunks {
		_, empty, err := testRun(t.peer.empty, pkt, chunk)
		if err != nil {
			return 0, err
		}
		t.baselines = append(t.baselines, float64(empty.Nanoseconds()))
		ret, d, err := testRun(t.peer.entry, pkt, chunk)
		if err != nil {
			return 0, err
		}
		if ret != want {
			return 0, fmt.Errorf("verdict %d, want %d", ret, want)
		}
		perRun = append(perRun, float64(d.Nanoseconds()))
	}
	return median(perRun), nil
}

// single: ns per run of a packet whose state must be reset between runs (a new
// connection), one run per call. Each run is paired with a one-run call of the empty
// program just before it; the caller takes the mean of (run - empty), which removes the
// call's own fixed cost (the kernel's clock reads around one run), and adds the
// repeat-mode baseline. The mean, not the median: with a reader running, only the events
// that find it asleep pay its wake-up, so a median would either hide that cost or charge
// it to every packet. Septum's side is measured the same way (src/septum/bench/septumside.py).
func (t *timer) single(pkt []byte, singles int, want uint32, reset func() error) ([]float64, error) {
	diffs := make([]float64, 0, singles)
	for range singles {
		if err := reset(); err != nil {
			return nil, err
		}
		_, empty, err := testRun(t.peer.empty, pkt, 1)
		if err != nil {
			return nil, err
		}
		ret, d, err := testRun(t.peer.entry, pkt, 1)
		if err != nil {
			return nil, err
		}
		if ret != want {
			return nil, fmt.Errorf("verdict %d, want %d", ret, want)
		}
		diffs = append(diffs, float64(d.Nanoseconds()-empty.Nanoseconds()))
	}
	return diffs, nil
}

func mean(values []float64) float64 {
	if len(values) == 0 {
		return 0
	}
	total := 0.0
	for _, v := range values {
		total += v
	}
	return total / float64(len(values))
}

func median(values []float64) float64 {
	if len(values) == 0 {
		return 0
	}
	sorted := slices.Clone(values)
	slices.Sort(sorted)
	n := len(sorted)
	if n%2 == 1 {
		return sorted[n/2]
	}
	return (sorted[n/2-1] + sorted[n/2]) / 2
}
