package main

import "encoding/binary"

// The benchmarked pod and the packets of Septum's bench (septum.dataplane.packets.tcp4 with
// TCP_ACK): 54 bytes, Ethernet + IPv4 (no options) + TCP, IP checksum left zero as there.
var podAddr = [4]byte{10, 199, 0, 1}

const (
	benchSourcePort = 40000
	benchPeer       = 5    // identity 100005, allowed on TCP port 6 (entry 5)
	deniedPort      = 9999 // no entry: default deny under egress enforcement
	tcpFlagAck      = 0x10
)

func tcp4(src, dst [4]byte, sport, dport uint16) []byte {
	pkt := make([]byte, 54)
	copy(pkt[0:6], []byte{2, 0, 0, 0, 0, 2})
	copy(pkt[6:12], []byte{2, 0, 0, 0, 0, 1})
	binary.BigEndian.PutUint16(pkt[12:], 0x0800)
	ip := pkt[14:34]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], 40)
	binary.BigEndian.PutUint16(ip[4:], 1)
	ip[8] = 64
	ip[9] = 6
	copy(ip[12:16], src[:])
	copy(ip[16:20], dst[:])
	tcp := pkt[34:]
	binary.BigEndian.PutUint16(tcp[0:], sport)
	binary.BigEndian.PutUint16(tcp[2:], dport)
	binary.BigEndian.PutUint32(tcp[4:], 1)
	tcp[12] = 5 << 4
	tcp[13] = tcpFlagAck
	binary.BigEndian.PutUint16(tcp[14:], 65535)
	return pkt
}

func allowedPacket() []byte {
	return tcp4(podAddr, peerAddr(benchPeer).As4(), benchSourcePort, peerPort(benchPeer))
}

func deniedPacket() []byte {
	return tcp4(podAddr, peerAddr(benchPeer).As4(), benchSourcePort, deniedPort)
}
