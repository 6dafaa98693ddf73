"""Septum's side of the Cilium comparison, measured exactly as lab/gobuild/ciliumpeer
measures Cilium's program: the established and deny paths repeated in-kernel (5 chunks,
each after a chunk of the empty program), the deny path and new connections one run per
call (the mean of run minus a one-run call of the empty program just before it, plus
the repeat-mode baseline: a mean, because with a reader only the events that find it
asleep pay its wake-up), each set without and with an agent-like event reader."""

from __future__ import annotations

import secrets
import statistics
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Final

from septum.bench.population import (
    POD_IDENTITY,
    POD_IPV4,
    allowed_packet,
    denied_packet,
    policy_entries,
    prefixes,
)
from septum.dataplane import abi
from septum.dataplane.config import DatapathConfig
from septum.dataplane.datapath import EndpointSpec, NodeDatapath
from septum.dataplane.policy import EndpointPolicy

CHUNKS: Final = 5
ENDPOINT_ID: Final = 1
ENDPOINT_IFINDEX: Final = 1  # the loopback: test runs need an interface of this netns
TC_ACT_OK: Final = 0
TC_ACT_SHOT: Final = 2
# every figure `measure` returns, and the Cilium peer's bench mode too (besides its counts)
FIGURE_KEYS: Final = (
    "baseline_ns",
    "established_ns",
    "deny_ns",
    "deny_single_ns",
    "new_allow_ns",
    "established_reader_ns",
    "deny_single_reader_ns",
    "new_allow_reader_ns",
)


@contextmanager
def loaded_node(ringbuf_bytes: int = DatapathConfig.ringbuf_bytes) -> Iterator[NodeDatapath]:
    """A node with the bench population: the pod 10.199.0.1 (egress enforced) and its
    10,000 entries, the ipcache's 10,000 prefixes.  Torn down (pins removed) on exit."""
    name = f"bench-dp-{secrets.token_hex(2)}"
    node = NodeDatapath(DatapathConfig(node_name=name, ringbuf_bytes=ringbuf_bytes))
    try:
        node.upsert_prefixes(prefixes())
        node.upsert_endpoint(
            EndpointSpec(
                ENDPOINT_ID,
                ENDPOINT_IFINDEX,
                POD_IDENTITY,
                ipv4=POD_IPV4,
                check_source=False,
                attach=False,
            )
        )
        node.replace_policy(
            ENDPOINT_ID,
            EndpointPolicy(
                enforce_egress=True, entries=policy_entries(abi.TrafficDirection.EGRESS)
            ),
        )
        yield node
    finally:
        node.teardown()


class EventReader:
    """The agent's consumer of the flow ring, in a thread of its own: sleeps in epoll
    until the kernel signals records, takes every committed record, sleeps again."""

    def __init__(self, node: NodeDatapath) -> None:
        self._reader = node.flow_reader()
        self._stop = threading.Event()
        self.events = 0
        self._thread = threading.Thread(target=self._loop, name="bench-reader", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            if self._reader.wait(0.05):
                _, count = self._reader.read_records()
                self.events += count

    def stop(self) -> int:
        """Stops the thread, takes what is left; returns the events read."""
        self._stop.set()
        self._thread.join(timeout=5)
        while count := self._reader.read_records()[1]:
            self.events += count
        return self.events


class SameMethod:
    """Test runs of one node's from-pod program, timed as the Cilium peer times its own."""

    def __init__(self, node: NodeDatapath) -> None:
        self.node = node
        self.baselines: list[float] = []  # ns per empty run, every chunk of every figure

    def _run(self, program: str, packet: bytes, repeat: int) -> tuple[int, float]:
        result = self.node.test_run(program, packet, repeat=repeat, ifindex=ENDPOINT_IFINDEX)
        return result.retval, float(result.duration_ns)

    def repeated(self, packet: bytes, repeats: int, want: int) -> float:
        chunk = max(repeats // CHUNKS, 1)
        per_run = []
        for _ in range(CHUNKS):
            self.baselines.append(self._run(abi.PROG_BENCH_EMPTY, packet, chunk)[1])
            verdict, duration = self._run(abi.PROG_FROM_POD, packet, chunk)
            _check(verdict, want)
            per_run.append(duration)
        return statistics.median(per_run)

    def single(self, packet: bytes, singles: int, want: int, reset: Callable[[], None]) -> float:
        """Mean over `singles` one-run calls of (run - the empty run just before it)."""
        over_empty = []
        for _ in range(singles):
            reset()
            empty = self._run(abi.PROG_BENCH_EMPTY, packet, 1)[1]
            verdict, duration = self._run(abi.PROG_FROM_POD, packet, 1)
            _check(verdict, want)
            over_empty.append(duration - empty)
        return statistics.fmean(over_empty)


def _check(verdict: int, want: int) -> None:
    if verdict != want:
        raise RuntimeError(f"septum_from_pod returned {verdict}, want {want}")


def measure_set(timer: SameMethod, repeats: int, singles: int, reader: bool) -> dict[str, float]:
    """One set of figures (keys as the Cilium peer's: established, deny, deny_single,
    new_allow; one-run figures still over the empty program, see `finish`)."""
    node = timer.node
    allowed, denied = allowed_packet(), denied_packet()
    node.flush_conntrack()
    _check(timer._run(abi.PROG_FROM_POD, allowed, 1)[0], TC_ACT_OK)  # creates the entry
    connection = list(node.conntrack4_map.keys())
    if not connection:
        raise RuntimeError("the first allowed packet created no conntrack entry")

    def forget() -> None:
        # exactly the entries this connection made: walking the table per run would
        # cost milliseconds
        for key in connection:
            node.conntrack4_map.delete(key)

    figures = {"established": timer.repeated(allowed, repeats, TC_ACT_OK)}
    if not reader:
        # with a reader this burst would only measure a full ring (see ciliumpeer/modes.go)
        figures["deny"] = timer.repeated(denied, repeats, TC_ACT_SHOT)
    figures["deny_single_over_empty"] = timer.single(denied, singles, TC_ACT_SHOT, _nothing)
    figures["new_allow_over_empty"] = timer.single(allowed, singles, TC_ACT_OK, forget)
    return figures


def _nothing() -> None:
    return None


def measure(node: NodeDatapath, repeats: int, singles: int) -> dict[str, float]:
    """Both sets on one node: without a reader, then with the agent-like reader running.
    Keys as the peer's JSON: established_ns, deny_ns, deny_single_ns, new_allow_ns and
    the same with _reader before _ns, baseline_ns, events_read."""
    timer = SameMethod(node)
    figures: dict[str, float] = {}
    for suffix in ("", "_reader"):
        event_reader = EventReader(node) if suffix else None
        try:
            for name, value in measure_set(timer, repeats, singles, bool(suffix)).items():
                figures[name + suffix] = value
        finally:
            if event_reader is not None:
                figures["events_read"] = float(event_reader.stop())
    return finish(figures, statistics.median(timer.baselines))


def finish(figures: dict[str, float], baseline_ns: float) -> dict[str, float]:
    """One-run figures are differences over the empty program: the same run's
    repeat-mode baseline puts them on the scale of the repeat-mode figures."""
    out = {"baseline_ns": baseline_ns}
    for name, value in figures.items():
        if name == "events_read":
            out[name] = value
        elif "_over_empty" in name:
            out[name.replace("_over_empty", "") + "_ns"] = value + baseline_ns
        else:
            out[name + "_ns"] = value
    return out
