"""Where a TCP connection's datapath cost goes (issue 17, second part): during one run of
the connection-rate client under Septum, the kernel's BPF run-time statistics of the
programs on both pods' host veths (every run on either interface, either direction) and
the flow events those runs sent.

An event is sent only by a run that took the full path and reported something: a new
connection, the first sight of a TCP flag in a direction, the first reply, a close.  So the
events per connection, by kind, say which packets took the full path and why; the runs
without an event are the fast path (conntrack hit, nothing new) or full-path runs that had
nothing to report, which the datapath does not count apart."""

from __future__ import annotations

import statistics
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from septum.bench.bpfstats import measure_live
from septum.bench.population import allowed_packet
from septum.dataplane import abi
from septum.dataplane.datapath import NodeDatapath
from septum.dataplane.events import Flow, decode_records

_TCP_FLAG_NAMES = ((0x02, "SYN"), (0x10, "ACK"), (0x01, "FIN"), (0x04, "RST"), (0x08, "PSH"))


@dataclass
class ConnectionCost:
    connections: int
    run_time_ns: int  # as the kernel's statistics count it, their own clock reads included
    runs: int
    stats_ns_per_run: float  # what the statistics add to a run (see stats_overhead_ns)
    events: Counter[str] = field(default_factory=Counter)
    lost_events: int = 0
    elapsed_s: float = 0.0  # the client's own clock for its connections

    @property
    def connections_per_s(self) -> float:
        """The rate during this run, with its reader taking every event."""
        return self.connections / self.elapsed_s if self.elapsed_s else 0.0

    @property
    def ns_per_connection(self) -> float:
        """The programs' own time per connection, the statistics' clock reads taken out."""
        if not self.connections:
            return 0.0
        return (self.run_time_ns - self.runs * self.stats_ns_per_run) / self.connections

    @property
    def runs_per_connection(self) -> float:
        return self.runs / self.connections if self.connections else 0.0

    def events_per_connection(self) -> dict[str, float]:
        return {kind: count / self.connections for kind, count in self.events.most_common()}


def event_kind(flow: Flow) -> str:
    """e.g. 'egress SYN new', 'ingress reply SYN|ACK', 'egress ACK|RST close'."""
    direction = abi.TrafficDirection(flow.direction).name.lower()
    flags = "|".join(name for bit, name in _TCP_FLAG_NAMES if flow.tcp_flags & bit) or "-"
    parts = [direction, "reply" if flow.is_reply else "", flags]
    if flow.flags & abi.EVENT_F_CT_CLOSE:
        parts.append("close")
    if flow.verdict != abi.Verdict.FORWARDED:
        parts.append(abi.Verdict(flow.verdict).name.lower())
    return " ".join(part for part in parts if part)


class _EventTally:
    """Takes the node's flow records in a thread while the connections run, as the agent's
    ingest does (raw records, one slice per batch: fast enough for ~200,000 events a
    second here), and names them by kind afterwards."""

    def __init__(self, node: NodeDatapath) -> None:
        self._reader = node.flow_reader()
        self._batches: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="bench-conn-events", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            if self._reader.wait(0.05):
                self._take()

    def _take(self) -> int:
        chunk, count = self._reader.read_records()
        if count:
            self._batches.append(chunk)
        return count

    def stop(self) -> Counter[str]:
        self._stop.set()
        self._thread.join(timeout=5)
        while self._take():  # what arrived after the thread's last read
            pass
        kinds: Counter[str] = Counter()
        for chunk in self._batches:
            kinds.update(event_kind(flow) for flow in decode_records(chunk))
        return kinds


def stats_overhead_ns(node: NodeDatapath, repeats: int = 200_000) -> float:
    """What kernel.bpf_stats_enabled adds to one program run (two clock reads and a
    per-CPU update), from the empty program test-run with the statistics off and on."""
    packet = allowed_packet()

    def empty_ns() -> float:
        return float(node.test_run(abi.PROG_BENCH_EMPTY, packet, repeat=repeats).duration_ns)

    off = [empty_ns() for _ in range(3)]
    on: list[float] = []
    measure_live(node, lambda: on.extend(empty_ns() for _ in range(3)))
    return max(0.0, statistics.median(on) - statistics.median(off))


def measure(node: NodeDatapath, run_connections: Callable[[], tuple[int, float]]) -> ConnectionCost:
    """`run_connections` opens and closes connections through the node's attached programs
    and returns (how many it completed, seconds it took)."""
    while node.flow_reader().read_records()[1]:  # older events are not ours
        pass
    lost_before = node.lost_events()
    tally = _EventTally(node)
    completed, elapsed_s = 0, 0.0

    def action() -> None:
        nonlocal completed, elapsed_s
        completed, elapsed_s = run_connections()

    try:
        run_time_ns, runs = measure_live(node, action)
    finally:
        kinds = tally.stop()
    return ConnectionCost(
        connections=completed,
        run_time_ns=run_time_ns,
        runs=runs,
        stats_ns_per_run=stats_overhead_ns(node),
        events=kinds,
        lost_events=node.lost_events() - lost_before,
        elapsed_s=elapsed_s,
    )
