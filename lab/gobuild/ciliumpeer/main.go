// Command ciliumpeer runs Cilium's own endpoint program (cil_from_container of bpf_lxc,
// compiled by lab/gobuild/build-cilium-peer.sh) through BPF_PROG_TEST_RUN beside Septum's
// `septum bench datapath`, on the same packets and map populations, and prints JSON.
//
// It is built inside a wrapper module that requires github.com/cilium/cilium at the
// pinned release, so the loading (pkg/bpf.LoadCollection: tail calls, config constants)
// and the map encodings (pkg/maps/ipcache, pkg/maps/policymap) are Cilium's own code.
//
//	ciliumpeer -obj peer_lxc.o -mode verdicts     # one run per packet: verdicts, conntrack
//	ciliumpeer -obj peer_lxc.o -mode bench ...    # timings, without and with an event reader
package main

import (
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"os"
)

func main() {
	objPath := flag.String("obj", "", "the compiled peer object (peer_lxc.o)")
	mode := flag.String("mode", "bench", "verdicts | bench")
	repeats := flag.Int("repeats", 1_000_000, "test-run repeats per repeat-mode path (in chunks)")
	singles := flag.Int("singles", 20_000, "one-run-per-call iterations per new-connection figure")
	entries := flag.Int("entries", 10_000, "ipcache prefixes and policy entries")
	allowedHex := flag.String("allowed", "", "the allowed packet, hex (default: Septum's bench packet)")
	deniedHex := flag.String("denied", "", "the denied packet, hex (default: Septum's bench packet)")
	flag.Parse()
	if *objPath == "" {
		fail("-obj is required")
	}
	peer, err := loadPeer(*objPath)
	if err != nil {
		fail("%v", err)
	}
	defer peer.Close()
	if err := fillMaps(peer, *entries); err != nil {
		fail("%v", err)
	}
	allowed, err := packetFlag(*allowedHex, allowedPacket())
	if err != nil {
		fail("-allowed: %v", err)
	}
	denied, err := packetFlag(*deniedHex, deniedPacket())
	if err != nil {
		fail("-denied: %v", err)
	}
	var out any
	switch *mode {
	case "verdicts":
		out, err = verdicts(peer, allowed, denied)
	case "bench":
		out, err = bench(peer, allowed, denied, *repeats, *singles)
	default:
		err = fmt.Errorf("-mode %q: want verdicts or bench", *mode)
	}
	if err != nil {
		fail("%v", err)
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		fail("writing JSON: %v", err)
	}
}

// packetFlag: the caller's bytes when given, so both programs see the very same packets.
func packetFlag(value string, fallback []byte) ([]byte, error) {
	if value == "" {
		return fallback, nil
	}
	return hex.DecodeString(value)
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "ciliumpeer: "+format+"\n", args...)
	os.Exit(1)
}
