"""`septum bench e2e`'s probers: one long-lived process per client pod that times when a policy
change shows in traffic (first SYN through, first SYN dropped)."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

HOLD = 3  # connections in a row with the new verdict before a pair counts as switched


class E2EError(Exception):
    """The benchmark could not run, or a verdict never held (the message says what was seen)."""


# Runs in a client pod's network namespace (python -I -c). argv: interval_ms timeout_ms hold
# targets ("ip:port,..."). Each stdin line "SEQ allow|deny LIMIT_S" starts one measurement;
# the answer is one JSON line. Times are CLOCK_MONOTONIC, shared by every process here.
PROBER = r"""
import errno, json, selectors, socket, struct, sys, time
interval, timeout, hold = float(sys.argv[1]) / 1e3, float(sys.argv[2]) / 1e3, int(sys.argv[3])
targets = [t for t in sys.argv[4].split(",") if t]
addr = {t: (t.rsplit(":", 1)[0], int(t.rsplit(":", 1)[1])) for t in targets}
linger0 = struct.pack("ii", 1, 0)
sel = selectors.DefaultSelector()
print("ready", flush=True)
for line in sys.stdin:
    seq, want, limit = line.split()
    allow, end = want == "allow", time.monotonic() + float(limit)
    order = {t: [] for t in targets}   # [launched, outcome or None] in launch order
    run = {t: [0, None] for t in targets}
    done, probes, flips, last = {}, 0, 0, {}
    pending = {}
    def settle(t):
        global flips
        q = order[t]
        while q and q[0][1] is not None and t not in done:
            launched, ok = q.pop(0)
            last[t] = ok
            if ok == allow:
                if run[t][0] == 0: run[t][1] = launched
                run[t][0] += 1
                if run[t][0] >= hold: done[t] = run[t][1]
            else:
                if run[t][0]: flips += 1
                run[t] = [0, None]
    def finish(s, ok):
        t, entry = pending.pop(s)
        try: sel.unregister(s)
        except (KeyError, ValueError): pass
        s.close(); entry[1] = ok; settle(t)
    next_launch = time.monotonic()
    while len(done) < len(targets):
        now = time.monotonic()
        if now >= end: break
        if now >= next_launch:
            for t in targets:
                if t in done: continue
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.setblocking(False)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger0)
                entry = [time.monotonic(), None]; order[t].append(entry); probes += 1
                pending[s] = (t, entry)
                rc = s.connect_ex(addr[t])
                if rc == errno.EINPROGRESS: sel.register(s, selectors.EVENT_WRITE)
                else: finish(s, rc == 0)
            next_launch = max(next_launch + interval, now)
        for key, _ in sel.select(0):  # answers first: a late wake-up is not a drop
            s = key.fileobj
            if s in pending: finish(s, s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0)
        now = time.monotonic()
        for s, (t, entry) in list(pending.items()):
            if now - entry[0] >= timeout: finish(s, False)
        wake = next_launch - now
        if pending: wake = min(wake, min(e[0] for _, e in pending.values()) + timeout - now)
        for key, _ in sel.select(max(0.0, wake)):
            s = key.fileobj
            if s in pending: finish(s, s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0)
    for s in list(pending): finish(s, False)
    print(json.dumps({"seq": int(seq), "done": done, "probes": probes, "flips": flips,
                      "last": last}), flush=True)
"""


@dataclass
class Prober:
    """One prober process in a client pod's network namespace."""

    client: str  # namespace/name
    node: str
    proc: subprocess.Popen[str]

    def start_measurement(self, seq: int, allow: bool, limit_s: float) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{seq} {'allow' if allow else 'deny'} {limit_s}\n")
        self.proc.stdin.flush()

    def result(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise E2EError(f"prober in {self.client} exited: {err[-2000:]}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


def start_prober(
    client: dict[str, Any], targets: list[str], interval_ms: float, timeout_ms: float
) -> Prober:
    from septum.lab import config

    netns = config.pod_netns(client["metadata"]["uid"])
    argv = [
        "ip", "netns", "exec", netns, sys.executable, "-I", "-c", PROBER,
        str(interval_ms), str(timeout_ms), str(HOLD), ",".join(targets),
    ]  # fmt: skip
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    ref = f"{client['metadata']['namespace']}/{client['metadata']['name']}"
    prober = Prober(ref, client["spec"]["nodeName"], proc)
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        prober.stop()
        raise E2EError(
            f"prober in {ref} did not start: {proc.stderr.read() if proc.stderr else ''}"
        )
    return prober


def stop_all(probers: list[Prober]) -> None:
    for prober in probers:
        prober.stop()
