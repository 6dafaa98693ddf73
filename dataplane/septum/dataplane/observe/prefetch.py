"""Build a GetFlows stream's next messages while grpcio writes the current one.

grpcio's synchronous server allows one write in flight per stream: the
handler thread hands a message to gRPC core and sleeps until it is written.
Building a message (decoding a compact record into a Flow and serializing it,
~15-25 us here) inside that handler puts the build on the critical path of
every write; measured on this machine a follower then got about half the
messages per second it gets when the bytes were already built. A builder
thread runs the stream generator ahead into a bounded buffer instead, so the
build overlaps the write, and the handler only pops ready bytes.

The buffer has a high and a low water mark: the builder sleeps when it is
full and is woken only once the handler has drained it to the low mark, so a
steady stream costs no thread wake-up per message.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Generator

from septum.dataplane.observe.query import FlowQuery, stream_flows_blocking
from septum.dataplane.observe.ring import FlowRing

# Messages built ahead of the one being written (a few hundred KB at most).
HIGH_WATER = 256
LOW_WATER = 64
# How often a waiting side re-checks for cancellation or shutdown.
_CHECK_S = 0.5


class _End:
    """Queued after the last message; carries the builder's exception, if any."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error


def stream_flows_prefetched(
    ring: FlowRing,
    query: FlowQuery,
    node_name: str,
    is_active: Callable[[], bool],
    high_water: int = HIGH_WATER,
    low_water: int = LOW_WATER,
) -> Generator[bytes, None, None]:
    """stream_flows_blocking's messages, in the same order, built by a helper thread."""
    if not 0 <= low_water < high_water:
        raise ValueError(
            f"prefetch: need 0 <= low_water < high_water, got {low_water}, {high_water}"
        )
    ready: deque[bytes | _End] = deque()
    cond = threading.Condition(threading.Lock())
    stopped = threading.Event()  # the consumer left: the builder must end

    def still_wanted() -> bool:
        return not stopped.is_set() and is_active()

    def build() -> None:
        end = _End()
        try:
            for message in stream_flows_blocking(ring, query, node_name, still_wanted):
                with cond:
                    while len(ready) >= high_water and not stopped.is_set():
                        cond.wait(_CHECK_S)
                        if not is_active():
                            stopped.set()
                    if stopped.is_set():
                        return
                    ready.append(message)
                    if len(ready) == 1:
                        cond.notify_all()  # the consumer may be waiting for it
        except BaseException as err:  # handed to the consumer, which raises it
            end = _End(err)
        with cond:
            ready.append(end)
            cond.notify_all()

    builder = threading.Thread(target=build, name="getflows-build", daemon=True)
    builder.start()
    try:
        while True:
            with cond:
                while not ready:
                    if not is_active():
                        return
                    cond.wait(_CHECK_S)
                item = ready.popleft()
                if len(ready) == low_water:
                    cond.notify_all()  # the builder may sleep at the high mark
            if isinstance(item, _End):
                if item.error is not None:
                    raise item.error
                return
            yield item
    finally:
        stopped.set()
        with cond:
            cond.notify_all()
        ring.wake_readers()  # a builder asleep on the ring re-checks still_wanted
        builder.join(_CHECK_S * 4)
