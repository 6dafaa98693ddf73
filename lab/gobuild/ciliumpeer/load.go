package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/rlimit"

	"github.com/cilium/cilium/pkg/bpf"
	"github.com/cilium/cilium/pkg/option"
)

const (
	entryProgram = "cil_from_container"
	emptyProgram = "septum_peer_empty"
	ct4Map       = "cilium_ct4_global"
	ctAny4Map    = "cilium_ct_any4_global"
	ipcacheMap   = "cilium_ipcache_v2"
	policyMap    = "cilium_policy"
	eventsMap    = "cilium_events"
)

// Peer is the loaded collection and the handles the measurements use.
type Peer struct {
	coll   *ebpf.Collection
	entry  *ebpf.Program
	empty  *ebpf.Program
	ct4    *ebpf.Map
	ctAny4 *ebpf.Map
	events *ebpf.Map
}

func (p *Peer) Close() { p.coll.Close() }

// loadPeer loads the object the way Cilium's BPF unit tests do (pkg/bpf.LoadCollection
// fills the tail-call maps and prunes what is unreachable), with three changes that make
// it an agent's endpoint rather than a test's: conntrack at the agent's default sizes,
// nothing pinned (a benchmark leaves nothing behind), and only the tc programs kept.
func loadPeer(path string) (*Peer, error) {
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("memlock: %w", err)
	}
	spec, err := ebpf.LoadCollectionSpec(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	for _, m := range spec.Maps {
		m.Pinning = ebpf.PinNone
	}
	sizes := map[string]uint32{
		ct4Map:    option.CTMapEntriesGlobalTCPDefault,
		ctAny4Map: option.CTMapEntriesGlobalAnyDefault,
	}
	for name, size := range sizes {
		m, ok := spec.Maps[name]
		if !ok {
			return nil, fmt.Errorf("%s: no map %s", path, name)
		}
		m.MaxEntries = size
	}
	// The scaffolding's object also holds the tests' helper programs of other types;
	// BPF_PROG_TEST_RUN needs only the tc ones, as Cilium's bpftest harness keeps.
	for name, prog := range spec.Programs {
		if prog.Type != ebpf.SchedCLS {
			delete(spec.Programs, name)
		}
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	coll, _, err := bpf.LoadCollection(logger, spec, nil)
	if err != nil {
		var verr *ebpf.VerifierError
		if errors.As(err, &verr) {
			return nil, fmt.Errorf("verifier refused %s: %+v", path, verr)
		}
		return nil, fmt.Errorf("loading %s: %w", path, err)
	}
	peer := &Peer{
		coll:   coll,
		entry:  coll.Programs[entryProgram],
		empty:  coll.Programs[emptyProgram],
		ct4:    coll.Maps[ct4Map],
		ctAny4: coll.Maps[ctAny4Map],
		events: coll.Maps[eventsMap],
	}
	if peer.entry == nil || peer.empty == nil || peer.ct4 == nil || peer.ctAny4 == nil || peer.events == nil {
		coll.Close()
		return nil, fmt.Errorf("%s: missing %s, %s or a map after loading", path, entryProgram, emptyProgram)
	}
	return peer, nil
}

// conntrackEntries counts the IPv4 conntrack entries (TCP and other tables).
func (p *Peer) conntrackEntries() (int, error) {
	total := 0
	for _, m := range []*ebpf.Map{p.ct4, p.ctAny4} {
		keys, err := mapKeys(m)
		if err != nil {
			return 0, err
		}
		total += len(keys)
	}
	return total, nil
}

// flushConntrack deletes every IPv4 conntrack entry (one walk of both tables: slow at the
// agent's sizes, so only before a set of runs).
func (p *Peer) flushConntrack() error {
	for _, m := range []*ebpf.Map{p.ct4, p.ctAny4} {
		keys, err := mapKeys(m)
		if err != nil {
			return err
		}
		if err := deleteKeys(m, keys); err != nil {
			return err
		}
	}
	return nil
}

// conntrackSnapshot: the keys a connection created, to delete exactly those between timed
// runs (the tables hold 768Ki slots; walking them per run would take milliseconds).
type conntrackSnapshot struct {
	ct4, ctAny4 [][]byte
}

func (p *Peer) snapshotConntrack() (conntrackSnapshot, error) {
	ct4, err := mapKeys(p.ct4)
	if err != nil {
		return conntrackSnapshot{}, err
	}
	ctAny4, err := mapKeys(p.ctAny4)
	return conntrackSnapshot{ct4, ctAny4}, err
}

func (p *Peer) forget(s conntrackSnapshot) error {
	if err := deleteKeys(p.ct4, s.ct4); err != nil {
		return err
	}
	return deleteKeys(p.ctAny4, s.ctAny4)
}

func deleteKeys(m *ebpf.Map, keys [][]byte) error {
	for _, k := range keys {
		if err := m.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("conntrack delete: %w", err)
		}
	}
	return nil
}

func mapKeys(m *ebpf.Map) ([][]byte, error) {
	var keys [][]byte
	var key, value []byte
	it := m.Iterate()
	for it.Next(&key, &value) {
		keys = append(keys, append([]byte(nil), key...))
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("iterating a map: %w", err)
	}
	return keys, nil
}
