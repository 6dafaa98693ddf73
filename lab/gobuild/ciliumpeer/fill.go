package main

import (
	"fmt"
	"net/netip"

	"github.com/cilium/cilium/pkg/identity"
	ipcachemap "github.com/cilium/cilium/pkg/maps/ipcache"
	"github.com/cilium/cilium/pkg/maps/policymap"
	policytypes "github.com/cilium/cilium/pkg/policy/types"
)

// Septum's bench population (src/septum/bench/datapath.py): peer i is 10.200.(i/250).(i%250+1)
// with identity 100000+i, and the endpoint's egress policy allows each peer identity on
// TCP port 1+i%1000, one L3+L4 entry per remote identity.
const firstPeerIdentity = 100_000

func peerAddr(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, 200, byte(i / 250), byte(i%250 + 1)})
}

func peerPort(i int) uint16 { return uint16(1 + i%1000) }

// fillMaps writes the population through Cilium's own key and value encoders, as the
// agent's ipcache and policy map writers do (an allow at the agent's allow precedence).
func fillMaps(p *Peer, entries int) error {
	ipcache, policy := p.coll.Maps[ipcacheMap], p.coll.Maps[policyMap]
	if ipcache == nil || policy == nil {
		return fmt.Errorf("no %s or %s in the collection", ipcacheMap, policyMap)
	}
	for i := range entries {
		id := uint32(firstPeerIdentity + i)
		key := ipcachemap.NewKey(netip.PrefixFrom(peerAddr(i), 32), 0)
		value := ipcachemap.NewValue(id, netip.Addr{}, 0, 0)
		if err := ipcache.Put(&key, &value); err != nil {
			return fmt.Errorf("ipcache entry %d: %w", i, err)
		}
		pk := policymap.NewKeyFromPolicyKey(
			policytypes.EgressKey().WithIdentity(identity.NumericIdentity(id)).WithTCPPort(peerPort(i)))
		pe := policymap.NewEntryFromPolicyEntry(pk, policytypes.AllowEntry())
		if err := policy.Put(&pk, &pe); err != nil {
			return fmt.Errorf("policy entry %d: %w", i, err)
		}
	}
	return nil
}
