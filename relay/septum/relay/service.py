"""The relay's Observer: GetFlows merged over every agent, ServerStatus and GetNodes per node.

GetFlows forwards the client's request, filters included, to every connected agent (each
agent filters its own flows) and merges the answers by time (septum.relay.merge). A follower
learns which nodes are in its stream through NodeStatusEvents, as Hubble Relay sends them:
NODE_CONNECTED and NODE_UNAVAILABLE at the start, NODE_UNAVAILABLE when an agent's stream
breaks, NODE_CONNECTED when it comes back (its stream is resumed from the last time seen, so
nothing the agent still holds is missed or repeated). Messages are forwarded as the agents
serialized them. A reader that the client does not keep up with stops reading its agent
(HTTP/2 flow control), and the agent counts what its ring overwrote meanwhile as
HUBBLE_RING_BUFFER LostEvents, which reach the client with the node's name.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import grpclib.const
import grpclib.server
from grpclib.client import UnaryStreamMethod, UnaryUnaryMethod
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from septum.dataplane.observe.api.observer import observer_pb2
from septum.dataplane.observe.api.relay import relay_pb2
from septum.dataplane.observe.service import (
    HUBBLE_API_VERSION,
    LOST_EVENT_SOURCES,
    SERVER_VERSION_HEADER,
)
from septum.relay import messages
from septum.relay.merge import Item, SortBuffer, merge_history
from septum.relay.peers import CALL_ERRORS, Node, PeerManager

log = logging.getLogger(__name__)

GET_FLOWS_PATH = "/observer.Observer/GetFlows"
GET_NAMESPACES_PATH = "/observer.Observer/GetNamespaces"
_VERSION_METADATA = {SERVER_VERSION_HEADER: HUBBLE_API_VERSION}
# A GetFlowsResponse that starts with field 1 (length-delimited) is a flow: no walk needed.
_FLOW_TAG = b"\x0a"


@dataclass(frozen=True)
class MergeSettings:
    """Follow mode's sort buffer (Hubble Relay's sort-buffer-len-max / drain-timeout)."""

    lag_s: float = 0.2
    max_len: int = 2048


@dataclass
class RelayStats:
    """Totals over every GetFlows call since the relay started."""

    flows: int = 0
    lost_by_source: dict[int, int] = field(default_factory=dict)
    late: int = 0

    def count(self, kind: int, data: bytes) -> None:
        if kind == messages.FLOW:
            self.flows += 1
        elif kind == messages.LOST_EVENTS:
            source, lost = messages.lost_count(data)
            self.lost_by_source[source] = self.lost_by_source.get(source, 0) + lost


@dataclass
class _Reader:
    """One agent's GetFlows answer inside one client's follow call."""

    node: Node
    newest_ns: int  # the newest time this node sent (where a resumed stream starts)
    task: asyncio.Task[None] = field(init=False)


class RelayObserver:
    """observer.Observer over every agent the peer manager knows."""

    def __init__(
        self,
        peers: PeerManager,
        merge: MergeSettings = MergeSettings(),
        version: str = "",
        name: str = "septum-relay",
    ) -> None:
        self.peers = peers
        self.merge = merge
        self.version = version
        self.name = name
        self.stats = RelayStats()
        self.started_ns = time.monotonic_ns()

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        unary_stream = grpclib.const.Cardinality.UNARY_STREAM
        unary = grpclib.const.Cardinality.UNARY_UNARY
        return {
            GET_FLOWS_PATH: grpclib.const.Handler(
                self.get_flows, unary_stream, observer_pb2.GetFlowsRequest, bytes
            ),
            "/observer.Observer/ServerStatus": grpclib.const.Handler(
                self.server_status,
                unary,
                observer_pb2.ServerStatusRequest,
                observer_pb2.ServerStatusResponse,
            ),
            "/observer.Observer/GetNodes": grpclib.const.Handler(
                self.get_nodes, unary, observer_pb2.GetNodesRequest, observer_pb2.GetNodesResponse
            ),
            GET_NAMESPACES_PATH: grpclib.const.Handler(
                self.get_namespaces,
                unary,
                observer_pb2.GetNamespacesRequest,
                observer_pb2.GetNamespacesResponse,
            ),
        }

    # ---- status -----------------------------------------------------------
    async def _refresh(self) -> None:
        """Every known node's status, asked now (concurrently)."""
        await self.peers.wait_checked(self.peers.call_timeout_s)
        await asyncio.gather(*(self.peers.check(node) for node in list(self.peers.nodes.values())))

    async def server_status(self, stream: grpclib.server.Stream[Any, Any]) -> None:
        await stream.recv_message()
        await self._refresh()
        reply = observer_pb2.ServerStatusResponse(version=self.version)
        lost: dict[int, int] = {}
        for node in self.peers.connected():
            status = node.status
            if status is None:
                continue
            reply.num_flows += status.num_flows
            reply.max_flows += status.max_flows
            reply.seen_flows += status.seen_flows
            reply.flows_rate += status.flows_rate
            for event in status.septum_lost_events:
                lost[event.source] = lost.get(event.source, 0) + event.num_events_lost
        reply.uptime_ns = time.monotonic_ns() - self.started_ns
        reply.num_connected_nodes.value = len(self.peers.connected())
        unavailable = self.peers.unavailable()
        reply.num_unavailable_nodes.value = len(unavailable)
        reply.unavailable_nodes.extend(node.name for node in unavailable)
        for source in LOST_EVENT_SOURCES:
            reply.septum_lost_events.add(source=source, num_events_lost=lost.get(source, 0))
        await stream.send_initial_metadata(metadata=_VERSION_METADATA)
        await stream.send_message(reply)

    async def get_nodes(self, stream: grpclib.server.Stream[Any, Any]) -> None:
        await stream.recv_message()
        await self._refresh()
        reply = observer_pb2.GetNodesResponse()
        for node in sorted(self.peers.nodes.values(), key=lambda n: n.name):
            message = reply.nodes.add(
                name=node.name,
                address=str(node.address),
                state=node.state,
            )
            message.tls.enabled = not self.peers.dialer.plaintext and node.address.host != ""
            message.tls.server_name = node.tls_server_name
            status = node.status
            if node.connected and status is not None:
                message.version = status.version
                message.uptime_ns = status.uptime_ns
                message.num_flows = status.num_flows
                message.max_flows = status.max_flows
                message.seen_flows = status.seen_flows
        await stream.send_initial_metadata(metadata=_VERSION_METADATA)
        await stream.send_message(reply)

    async def get_namespaces(self, stream: grpclib.server.Stream[Any, Any]) -> None:
        request = await stream.recv_message()
        assert request is not None  # a unary call always carries its request
        seen: set[tuple[str, str]] = set()

        async def ask(node: Node) -> None:
            method = UnaryUnaryMethod(
                self.peers.channel(node),
                GET_NAMESPACES_PATH,
                observer_pb2.GetNamespacesRequest,
                observer_pb2.GetNamespacesResponse,
            )
            try:
                answer = await method(request, timeout=self.peers.call_timeout_s)
            except CALL_ERRORS as err:
                self.peers.mark_unavailable(node, f"{type(err).__name__}: {err}")
                return
            seen.update((ns.cluster, ns.namespace) for ns in answer.namespaces)

        await asyncio.gather(*(ask(node) for node in self.peers.connected()))
        reply = observer_pb2.GetNamespacesResponse(
            namespaces=[
                observer_pb2.Namespace(cluster=cluster, namespace=namespace)
                for cluster, namespace in sorted(seen)
            ]
        )
        await stream.send_initial_metadata(metadata=_VERSION_METADATA)
        await stream.send_message(reply)

    # ---- flows --------------------------------------------------------------
    def _flows(
        self, node: Node, request: observer_pb2.GetFlowsRequest
    ) -> AsyncIterator[tuple[int, int, bytes]]:
        """(kind, time_ns, message) of one agent's answer; a filter the agent refuses is the
        client's error (INVALID_ARGUMENT passes through), anything else the node's."""
        method = UnaryStreamMethod(
            self.peers.channel(node), GET_FLOWS_PATH, observer_pb2.GetFlowsRequest, bytes
        )

        async def read() -> AsyncIterator[tuple[int, int, bytes]]:
            async with method.open() as call:
                await call.send_message(request, end=True)
                async for data in call:
                    kind, time_ns = messages.scan(data)
                    yield kind, time_ns, data

        return read()

    async def get_flows(self, stream: grpclib.server.Stream[Any, Any]) -> None:
        request = await stream.recv_message()
        assert isinstance(request, observer_pb2.GetFlowsRequest)
        # Nodes not checked yet (the relay just started) get their first answer first.
        await self.peers.wait_checked(self.peers.call_timeout_s)
        connected = self.peers.connected()
        unavailable = self.peers.unavailable()
        await stream.send_initial_metadata(metadata=_VERSION_METADATA)
        now = time.time_ns()
        if connected:
            names = [node.name for node in connected]
            await stream.send_message(
                messages.node_status(relay_pb2.NODE_CONNECTED, names, "", now)
            )
        if unavailable:
            names = [node.name for node in unavailable]
            await stream.send_message(
                messages.node_status(relay_pb2.NODE_UNAVAILABLE, names, "", now)
            )
        since: dict[str, int] = {}
        if not request.follow or request.number:
            history_request = observer_pb2.GetFlowsRequest()
            history_request.CopyFrom(request)
            history_request.follow = False
            since = await self._history(stream, history_request, connected)
            if not request.follow:
                return
        await self._follow(stream, request, connected, since)

    async def _history(
        self,
        stream: grpclib.server.Stream[Any, Any],
        request: observer_pb2.GetFlowsRequest,
        nodes: list[Node],
    ) -> dict[str, int]:
        """The finite answer, merged; returns each node's newest time sent (for follow)."""

        async def collect(node: Node) -> list[Item]:
            items: list[Item] = []
            try:
                async for kind, time_ns, data in self._flows(node, request):
                    items.append(Item(node.name, kind, time_ns, data))
            except GRPCError as err:
                if err.status == Status.INVALID_ARGUMENT:
                    raise
                self.peers.mark_unavailable(node, f"GetFlows: {err}")
            except CALL_ERRORS as err:
                self.peers.mark_unavailable(node, f"GetFlows: {type(err).__name__}: {err}")
            return items

        started_ns = time.time_ns()
        answers = await asyncio.gather(*(collect(node) for node in nodes))
        for item in merge_history(answers, request.number, request.first):
            self.stats.count(item.kind, item.data)
            await stream.send_message(item.data)
        # A follower goes on after everything each node answered, kept or not; a node
        # that answered nothing, after the time it was asked.
        return {
            node.name: max((item.time_ns for item in answer), default=started_ns)
            for node, answer in zip(nodes, answers, strict=True)
        }

    async def _follow(
        self,
        stream: grpclib.server.Stream[Any, Any],
        request: observer_pb2.GetFlowsRequest,
        nodes: list[Node],
        since: dict[str, int],
    ) -> None:
        merge = SortBuffer(int(self.merge.lag_s * 1e9), self.merge.max_len)
        wake = asyncio.Event()  # something was pushed, or a stream ended
        room = asyncio.Event()  # the buffer has room again
        room.set()
        readers: dict[str, _Reader] = {}
        status_out: list[bytes] = []  # node status events, sent before the next flows
        ends = request.HasField("until")  # without until a follow call ends with its client

        def start(node: Node) -> None:
            reader = readers.get(node.name)
            if reader is not None and not reader.task.done():
                return
            node_request = observer_pb2.GetFlowsRequest()
            node_request.CopyFrom(request)
            node_request.number = 0
            newest_ns = reader.newest_ns if reader is not None else since.get(node.name, 0)
            if newest_ns:
                # Resume after what was sent: the history, or up to where the stream broke.
                start_ns = newest_ns + 1
                if request.HasField("since"):
                    start_ns = max(start_ns, request.since.ToNanoseconds())
                node_request.since.FromNanoseconds(start_ns)
            if reader is not None:
                status_out.append(
                    messages.node_status(relay_pb2.NODE_CONNECTED, [node.name], "", time.time_ns())
                )
                wake.set()
            merge.open(node.name)
            reader = readers[node.name] = _Reader(node, newest_ns)
            reader.task = asyncio.create_task(read(reader, node_request))

        async def read(reader: _Reader, node_request: observer_pb2.GetFlowsRequest) -> None:
            node = reader.node
            try:
                async for _, time_ns, data in self._flows(node, node_request):
                    if time_ns > reader.newest_ns:
                        reader.newest_ns = time_ns
                    merge.push(node.name, time_ns, data, time.monotonic_ns())
                    wake.set()
                    if merge.full:
                        room.clear()
                        await room.wait()
                if ends:
                    return  # until reached
                reason = "the agent ended the stream"  # it stopped (its ring closed)
            except GRPCError as err:
                if err.status == Status.INVALID_ARGUMENT:
                    raise
                reason = f"GetFlows: {err}"
            except CALL_ERRORS as err:
                reason = f"GetFlows: {type(err).__name__}: {err}"
            finally:
                merge.close(node.name)
                wake.set()
            self.peers.mark_unavailable(node, reason)
            status_out.append(
                messages.node_status(
                    relay_pb2.NODE_UNAVAILABLE, [node.name], reason, time.time_ns()
                )
            )

        for node in nodes:
            start(node)
        unwatch: Callable[[], None] = self.peers.watch(start)
        try:
            await self._send_merged(stream, merge, readers, wake, room, status_out, ends)
        finally:
            unwatch()
            for reader in readers.values():
                reader.task.cancel()
            await asyncio.gather(*(r.task for r in readers.values()), return_exceptions=True)
            self.stats.late += merge.stats.late

    async def _send_merged(
        self,
        stream: grpclib.server.Stream[Any, Any],
        merge: SortBuffer,
        readers: dict[str, _Reader],
        wake: asyncio.Event,
        room: asyncio.Event,
        status_out: list[bytes],
        ends: bool,
    ) -> None:
        """Send what the sort buffer lets out, until every stream ended (with until) or the
        client leaves."""
        count = self.stats.count
        while True:
            for reader in readers.values():
                if reader.task.done() and not reader.task.cancelled():
                    error = reader.task.exception()
                    if error is not None:
                        raise error  # a filter the agents refused
            while status_out:
                await stream.send_message(status_out.pop(0))
            wake.clear()
            ready = merge.pop_ready(time.monotonic_ns())
            if not merge.full:
                room.set()
            for data in ready:
                count(messages.FLOW if data[:1] == _FLOW_TAG else messages.scan(data)[0], data)
                await stream.send_message(data)
            if ready:
                continue
            if ends and all(r.task.done() for r in readers.values()) and not len(merge):
                return
            due = merge.next_due_ns()
            timeout = None if due is None else max(0.0, (due - time.monotonic_ns()) / 1e9)
            if timeout == 0.0:
                continue
            try:
                await asyncio.wait_for(wake.wait(), timeout)
            except TimeoutError:
                pass
