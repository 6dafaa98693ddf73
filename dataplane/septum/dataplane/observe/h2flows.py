"""GetFlows served by the front itself: ring bytes straight into HTTP/2 DATA frames.

grpcio's Python server keeps one message write in flight per stream, which
caps a follower at ~10-14k messages/s on this machine whatever the server
does. Here each flow is still its own gRPC message (Hubble's wire), but every
message that is ready and fits the client's flow-control window is framed
into one buffer and sent as a few large DATA frames in one socket write.

The messages come from query.stream_flows, the same generator the grpcio
handler uses: the ring's cached, once-serialized GetFlowsResponse bytes. When
the follower has read everything the generator yields CaughtUp and the stream
sleeps until the ring's writer wakes the front's loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

from septum.dataplane.observe import h2link as hl
from septum.dataplane.observe.api.observer import observer_pb2
from septum.dataplane.observe.errors import FilterError
from septum.dataplane.observe.query import CaughtUp, FlowQuery, Paused, stream_flows
from septum.dataplane.observe.ring import FlowRing
from septum.dataplane.observe.service import HUBBLE_API_VERSION, SERVER_VERSION_HEADER

log = logging.getLogger(__name__)

GET_FLOWS_PATH = b"/observer.Observer/GetFlows"
# Bytes of messages built per turn of the event loop before other
# connections get their turn (one large socket write's worth).
TURN_BYTES = 1 << 18
# A request larger than this is refused (a GetFlowsRequest is a few KB at most).
MAX_REQUEST_BYTES = 4 << 20
# Filtered-out entries examined in one turn before other streams get theirs
# (a filter that needs the decoded Flow costs tens of µs per entry).
SCAN_PER_TURN = 256
_PREFIX = 5  # gRPC message prefix: compressed flag + 4-byte big-endian length


class FlowsHost(Protocol):
    """What a GetFlows stream needs from the front that runs it."""

    ring: FlowRing
    node_name: str
    loop: asyncio.AbstractEventLoop

    def wait_for_ring(self, stream: FlowsStream, seq: int) -> None: ...

    def flows_stream_done(self, stream: FlowsStream) -> None: ...


class FlowsStream:
    """One GetFlows call on one HTTP/2 stream of a front connection."""

    def __init__(
        self, host: FlowsHost, link: hl.H2Link, stream_id: int, headers: hl.Headers
    ) -> None:
        self.host = host
        self.link = link
        self.stream_id = stream_id
        self.waiting_for: int | None = None  # ring sequence number, while caught up
        self._request = bytearray()
        self._messages: Iterator[bytes | CaughtUp | Paused] | None = None
        self._done = False
        self._scheduled = False
        self._deadline: asyncio.TimerHandle | None = None
        self._encoding = b"identity"
        for name, value in headers:
            if name == b"grpc-encoding":
                self._encoding = value
            elif name == b"grpc-timeout":
                timeout_s = hl.parse_grpc_timeout(value)
                if timeout_s is not None:
                    self._deadline = host.loop.call_later(timeout_s, self._deadline_passed)

    # ---- request ----------------------------------------------------------
    def data(self, data: bytes) -> None:
        if self._messages is not None or self._done:
            return  # a unary request: anything after the first message is ignored
        self._request += data
        if len(self._request) >= _PREFIX:
            length = int.from_bytes(self._request[1:_PREFIX], "big")
            if length > MAX_REQUEST_BYTES:  # the message's size, as grpcio counts it
                self._end_early(
                    hl.RESOURCE_EXHAUSTED,
                    f"GetFlowsRequest of {length} bytes, more than {MAX_REQUEST_BYTES}",
                )
                return
            if len(self._request) >= _PREFIX + length:
                self._start(bytes(self._request[_PREFIX : _PREFIX + length]))

    def request_ended(self) -> None:
        if self._messages is None and not self._done:
            self._end_early(hl.INTERNAL, "GetFlows: the request carried no message")

    def _start(self, body: bytes) -> None:
        if self._request[0] != 0:  # compressed: Hubble clients never compress requests
            self._end_early(
                hl.UNIMPLEMENTED,
                f"compressed GetFlowsRequest (grpc-encoding "
                f"{self._encoding.decode(errors='replace')}) is not supported",
                # What we take instead (gRPC compression spec): clients that
                # honour it stop compressing on this channel.
                [(b"grpc-accept-encoding", b"identity")],
            )
            return
        try:
            request = observer_pb2.GetFlowsRequest.FromString(body)
            query = FlowQuery.from_request(request)
        except FilterError as err:
            self._end_early(hl.INVALID_ARGUMENT, f"invalid filter: {err}")
            return
        except Exception as err:  # a malformed message: gRPC's answer is INTERNAL
            self._end_early(hl.INTERNAL, f"cannot parse GetFlowsRequest: {err}")
            return
        self._request.clear()
        self.link.send_headers(
            self.stream_id,
            [
                (b":status", b"200"),
                (b"content-type", hl.GRPC_CONTENT_TYPE),
                (SERVER_VERSION_HEADER.encode(), HUBBLE_API_VERSION.encode()),
            ],
        )
        self._messages = stream_flows(
            self.host.ring, query, self.host.node_name, pause_every=SCAN_PER_TURN
        )
        self.pump()

    def _end_early(
        self, code: int, message: str, extra: Sequence[tuple[bytes, bytes]] = ()
    ) -> None:
        """A trailers-only response: the call failed before any message."""
        self.close()  # first: a client that sees the answer sees the stream released
        headers = [(b":status", b"200"), (b"content-type", hl.GRPC_CONTENT_TYPE), *extra]
        self.link.send_headers(
            self.stream_id, headers + hl.status_trailers(code, message), end_stream=True
        )

    # ---- response ---------------------------------------------------------
    def schedule(self) -> None:
        """Pump on a later turn of the loop (coalesces many wake-ups into one)."""
        if not self._scheduled and not self._done:
            self._scheduled = True
            self.host.loop.call_soon(self._scheduled_pump)

    def _scheduled_pump(self) -> None:
        self._scheduled = False
        self.pump()

    def pump(self) -> None:
        """Frame as many ready messages as the client's window takes, in one write."""
        messages = self._messages
        if messages is None or self._done or self.link.closed:
            return
        self.waiting_for = None
        budget = min(self.link.window(self.stream_id), TURN_BYTES)
        if budget <= 0 or self.link.paused:
            return  # the next WINDOW_UPDATE or resume_writing pumps again
        parts: list[bytes] = []
        size = 0
        finished = paused = False
        caught_up: int | None = None
        append = parts.append
        while size < budget:
            try:
                item = next(messages)
            except StopIteration:
                finished = True
                break
            except Exception as err:  # a bug building a flow: end this call, not the loop
                log.exception("GetFlows stream %d failed", self.stream_id)
                if parts:
                    self.link.send(self.stream_id, b"".join(parts))
                self._finish(hl.INTERNAL, f"building a flow failed: {err}")
                return
            if isinstance(item, Paused):
                paused = True
                break
            if isinstance(item, CaughtUp):
                caught_up = int(item)
                break
            append(b"\x00" + len(item).to_bytes(4, "big"))
            append(item)
            size += _PREFIX + len(item)
        if parts:
            self.link.send(self.stream_id, b"".join(parts))
        if finished:
            self._finish(hl.OK)
        elif caught_up is not None:
            self.host.wait_for_ring(self, caught_up)
        elif paused or self.link.window(self.stream_id) > 0:
            self.schedule()  # continue after the loop's other work
        # else: the window is used up; the link's flush (WINDOW_UPDATE) pumps us

    def _finish(self, code: int, message: str = "") -> None:
        self.close()
        self.link.finish(self.stream_id, hl.status_trailers(code, message))

    def _deadline_passed(self) -> None:
        self._deadline = None
        if self._done:
            return
        if self._messages is None:  # no request message yet, so no response headers either
            self._end_early(hl.DEADLINE_EXCEEDED, "deadline exceeded")
        else:
            self._finish(hl.DEADLINE_EXCEEDED, "deadline exceeded")

    def ring_closed(self) -> bool:
        return self.host.ring.closed

    def close(self) -> None:
        """Release everything this stream holds (idempotent)."""
        if self._done:
            return
        self._done = True
        self.waiting_for = None
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        if self._messages is not None:
            close: Callable[[], None] | None = getattr(self._messages, "close", None)
            if close is not None:
                close()
            self._messages = None
        self.host.flows_stream_done(self)

    @property
    def done(self) -> bool:
        return self._done
