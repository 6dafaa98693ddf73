"""Septum against Cilium's bpf_lxc on the same packets and population, within the same
minutes: rounds alternate the two (each round runs the other one first), and every figure
is the median over rounds.  Both sides are timed by the same method (septumside.py and
lab/gobuild/ciliumpeer), without and with an agent-like event reader."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Final

from septum.bench import ciliumpeer, septumside
from septum.bench.population import allowed_packet, denied_packet

# JSON key -> (side, key in that side's figures).  The reader figures are one run per
# call on both sides (a repeated burst of Cilium's two events per drop overruns its ring).
PEER_KEYS: Final = {
    "cilium_established_ns": ("cilium", "established_ns"),
    "cilium_new_allow_ns": ("cilium", "new_allow_ns"),
    "cilium_deny_ns": ("cilium", "deny_ns"),
    "cilium_deny_reader_ns": ("cilium", "deny_single_reader_ns"),
    "cilium_new_allow_reader_ns": ("cilium", "new_allow_reader_ns"),
    "septum_deny_reader_ns": ("septum", "deny_single_reader_ns"),
    "septum_new_allow_reader_ns": ("septum", "new_allow_reader_ns"),
}

# (row, Septum's key, Cilium's key, target ratio): what issue 17 holds Septum to
TARGETS: Final = (
    ("established (conntrack hit)", "established_ns", "established_ns", 0.25),
    ("deny, repeated in-kernel", "deny_ns", "deny_ns", 0.5),
    ("deny, one run per call", "deny_single_ns", "deny_single_ns", 0.5),
    ("new allow, one run per call", "new_allow_ns", "new_allow_ns", 0.5),
    ("established, reader running", "established_reader_ns", "established_reader_ns", 0.25),
    ("deny, reader running", "deny_single_reader_ns", "deny_single_reader_ns", 0.5),
    ("new allow, reader running", "new_allow_reader_ns", "new_allow_reader_ns", 0.5),
)


@dataclass
class Comparison:
    rounds: int
    septum: dict[str, float] = field(default_factory=dict)  # medians over rounds
    cilium: dict[str, float] = field(default_factory=dict)  # empty when unavailable
    unavailable: str = ""  # why the peer did not run (one line), else ""
    cilium_version: str = ""
    clang_version: str = ""

    def json_figures(self) -> dict[str, float | None]:
        """The issue's keys; None (JSON null) where the peer did not run, never 0."""
        sides = {"septum": self.septum, "cilium": self.cilium}
        return {key: sides[side].get(name) for key, (side, name) in PEER_KEYS.items()}


def _medians(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(float(run[key]) for run in runs) for key in runs[0]}


def compare(rounds: int, repeats: int, singles: int) -> Comparison:
    result = Comparison(rounds=rounds)
    directory = None
    try:
        directory = ciliumpeer.peer_dir()
        result.cilium_version = ciliumpeer.cilium_version(directory)
        result.clang_version = ciliumpeer.clang_version(directory)
    except ciliumpeer.PeerUnavailable as err:
        result.unavailable = str(err)
    septum_runs: list[dict[str, float]] = []
    cilium_runs: list[dict[str, float]] = []
    allowed, denied = allowed_packet(), denied_packet()

    def run_cilium() -> None:
        nonlocal directory
        if directory is None:
            return
        try:
            figures = ciliumpeer.run_peer(
                directory, "bench", allowed=allowed, denied=denied, repeats=repeats, singles=singles
            )
        except ciliumpeer.PeerUnavailable as err:
            result.unavailable, directory = str(err), None
            return
        cilium_runs.append({key: float(value) for key, value in figures.items()})

    with septumside.loaded_node() as node:
        for round_index in range(rounds):
            # each side goes first in every other round: neither always inherits the
            # other's cache state or a neighbour's burst
            if round_index % 2 == 0:
                run_cilium()
                septum_runs.append(septumside.measure(node, repeats, singles))
            else:
                septum_runs.append(septumside.measure(node, repeats, singles))
                run_cilium()
    result.septum = _medians(septum_runs)
    if cilium_runs and not result.unavailable:
        result.cilium = _medians(cilium_runs)
    return result
