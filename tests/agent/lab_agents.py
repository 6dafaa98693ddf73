"""Agents and the operator on the shared lab, for tests: now in septum.bench.labagents.

The product leaves its conflist, plugin and pins behind on purpose (a restart must never
open a window); a test that started agents removes them in its teardown.
"""

from __future__ import annotations

from septum.bench.labagents import (  # noqa: F401 - re-exported for the lab tests
    CONFLIST,
    PIN_ROOT,
    ROOT,
    RUN_DIR,
    SEPTUM,
    AgentProcess,
    OperatorProcess,
    agents_lock,
    agents_running,
    apply_crds,
    get_health,
    lab_exec,
    wait_gone,
)

# One probe, run in a client pod's network namespace (toolbox images run the host's python):
# exit 0 and "ok" when the peer answered (TCP connect, UDP echo, ICMP echo), else "fail".
PROBE = r"""
import socket, struct, sys, os
proto, ip, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
def checksum(data):
    if len(data) % 2: data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    s = (s >> 16) + (s & 0xffff); s += s >> 16
    return ~s & 0xffff
try:
    if proto == "tcp":
        socket.create_connection((ip, port), timeout=1.5).close()
    elif proto == "udp":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1.5)
        s.sendto(b"hostname", (ip, port)); s.recvfrom(1024)
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP); s.settimeout(1.5)
        ident = os.getpid() & 0xffff
        head = struct.pack("!BBHHH", 8, 0, 0, ident, 1) + b"septum"
        s.sendto(struct.pack("!BBHHH", 8, 0, checksum(head), ident, 1) + b"septum", (ip, 0))
        while True:
            data, _ = s.recvfrom(1024)
            if data[20] == 0 and struct.unpack("!H", data[24:26])[0] == ident: break
    print("ok")
except Exception as err:
    print("fail", err); sys.exit(1)
"""
