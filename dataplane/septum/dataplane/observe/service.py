"""The Observer and Peer gRPC services (method handlers, no listeners).

These are grpcio handlers. On a running ObserverServer the HTTP/2 front
serves GetFlows itself (observe/h2flows.py: the same query.stream_flows
messages, many per DATA frame) and relays every other RPC here; get_flows
below answers a grpcio server that uses these handlers directly. GetFlows
messages are bytes the ring already serialized, so a flow is encoded once
however many clients follow it. Every Observer response carries the
`hubble-server-version` header Hubble clients check.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc

from septum.dataplane.observe.api.flow import flow_pb2
from septum.dataplane.observe.api.observer import observer_pb2
from septum.dataplane.observe.api.peer import peer_pb2
from septum.dataplane.observe.api.relay import relay_pb2
from septum.dataplane.observe.errors import FilterError
from septum.dataplane.observe.peers import PeerChange, PeerDirectory
from septum.dataplane.observe.query import FlowQuery, stream_flows_blocking
from septum.dataplane.observe.ring import FlowRing

log = logging.getLogger(__name__)

OBSERVER_SERVICE = "observer.Observer"
PEER_SERVICE = "peer.Peer"
# The name Hubble clients health-check (hubble status), not the proto service name.
HUBBLE_HEALTH_SERVICE = "hubble.server.Observer"
# The Hubble API level Septum implements; clients compare it with their own
# version and warn when theirs is older.
HUBBLE_API_VERSION = "1.20.2"
SERVER_VERSION_HEADER = "hubble-server-version"
LOST_EVENT_SOURCES = (
    flow_pb2.PERF_EVENT_RING_BUFFER,
    flow_pb2.OBSERVER_EVENTS_QUEUE,
    flow_pb2.HUBBLE_RING_BUFFER,
)
# A follower with nothing new re-checks for shutdown this often.
_IDLE_WAKE_S = 0.5
# A peer follower re-checks for shutdown this often: the ring's close (the server's stop)
# is not signalled to it, and it ends well inside the stop's grace period (1 s).
_PEER_WAKE_S = 0.2
_CHANGE_TYPES = {
    "added": peer_pb2.PEER_ADDED,
    "updated": peer_pb2.PEER_UPDATED,
    "deleted": peer_pb2.PEER_DELETED,
}


@dataclass
class NodeIdentity:
    name: str
    address: str  # host:port Hubble clients reach this node's Observer on
    tls_server_name: str = ""
    version: str = ""


class ObserverService:
    def __init__(
        self,
        ring: FlowRing,
        node: NodeIdentity,
        namespaces: Callable[[], list[str]] = list,
        more_lost: Callable[[], dict[int, int]] = dict,
        peers: PeerDirectory | None = None,
    ) -> None:
        self.ring = ring
        self.node = node
        # Every node's Observer for peer.Peer/Notify (the agent keeps it from its Node watch);
        # None: a standalone Observer announces itself only.
        self.peers = peers
        self._namespaces = namespaces
        # Lost-event counts of sources beyond the ring's (the flow history store's).
        self._more_lost = more_lost
        self._rate_lock = threading.Lock()
        self._rate_sample = (time.monotonic(), ring.seen_flows)
        self._rate = 0.0

    # ---- helpers ---------------------------------------------------------
    def _header(self, context: grpc.ServicerContext) -> None:
        context.send_initial_metadata(((SERVER_VERSION_HEADER, HUBBLE_API_VERSION),))

    def flows_rate(self) -> float:
        """Flows per second, re-sampled at most once a second."""
        with self._rate_lock:
            now, seen = time.monotonic(), self.ring.seen_flows
            then, seen_then = self._rate_sample
            if now - then >= 1.0:
                self._rate = (seen - seen_then) / (now - then)
                self._rate_sample = (now, seen)
            return self._rate

    def _idle_until_done(self, context: grpc.ServicerContext) -> None:
        """Keep a stream open, sending nothing, until the client leaves or we stop."""
        while context.is_active() and not self.ring.closed:
            self.ring.wait_for(1 << 62, _IDLE_WAKE_S)

    # ---- Observer --------------------------------------------------------
    def get_flows(
        self, request: observer_pb2.GetFlowsRequest, context: grpc.ServicerContext
    ) -> Iterator[bytes]:
        try:
            query = FlowQuery.from_request(request)
        except FilterError as err:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"invalid filter: {err}")
            return
        self._header(context)
        yield from stream_flows_blocking(self.ring, query, self.node.name, context.is_active)

    def server_status(
        self, request: observer_pb2.ServerStatusRequest, context: grpc.ServicerContext
    ) -> observer_pb2.ServerStatusResponse:
        self._header(context)
        ring = self.ring
        reply = observer_pb2.ServerStatusResponse(
            num_flows=len(ring),
            max_flows=ring.capacity,
            seen_flows=ring.seen_flows,
            uptime_ns=ring.uptime_ns(),
            version=self.node.version,
            flows_rate=self.flows_rate(),
        )
        lost = dict(ring.lost_by_source)
        for source in LOST_EVENT_SOURCES:
            reply.septum_lost_events.add(source=source, num_events_lost=lost.get(source, 0))
        for more_source, count in self._more_lost().items():
            extra = reply.septum_lost_events.add(num_events_lost=count)
            # Septum's own source numbers (open enum): not among the generated values.
            extra.source = more_source  # type: ignore[assignment]
        return reply

    def node_message(self) -> observer_pb2.Node:
        ring = self.ring
        node = observer_pb2.Node(
            name=self.node.name,
            version=self.node.version,
            address=self.node.address,
            state=relay_pb2.NODE_CONNECTED,
            uptime_ns=ring.uptime_ns(),
            num_flows=len(ring),
            max_flows=ring.capacity,
            seen_flows=ring.seen_flows,
        )
        node.tls.enabled = bool(self.node.tls_server_name)
        node.tls.server_name = self.node.tls_server_name
        return node

    def get_nodes(
        self, request: observer_pb2.GetNodesRequest, context: grpc.ServicerContext
    ) -> observer_pb2.GetNodesResponse:
        self._header(context)
        return observer_pb2.GetNodesResponse(nodes=[self.node_message()])

    def get_namespaces(
        self, request: observer_pb2.GetNamespacesRequest, context: grpc.ServicerContext
    ) -> observer_pb2.GetNamespacesResponse:
        self._header(context)
        return observer_pb2.GetNamespacesResponse(
            namespaces=[observer_pb2.Namespace(namespace=ns) for ns in self._namespaces()]
        )

    def _idle(self, follow: bool, context: grpc.ServicerContext) -> Iterator[Any]:
        # Septum has no agent/debug events yet: answer correctly with none,
        # and keep a follower open until it leaves or the server stops.
        self._header(context)
        if follow:
            self._idle_until_done(context)
        yield from ()

    def get_agent_events(
        self, request: observer_pb2.GetAgentEventsRequest, context: grpc.ServicerContext
    ) -> Iterator[observer_pb2.GetAgentEventsResponse]:
        return self._idle(request.follow, context)

    def get_debug_events(
        self, request: observer_pb2.GetDebugEventsRequest, context: grpc.ServicerContext
    ) -> Iterator[observer_pb2.GetDebugEventsResponse]:
        return self._idle(request.follow, context)

    # ---- Peer ------------------------------------------------------------
    def notify(
        self, request: peer_pb2.NotifyRequest, context: grpc.ServicerContext
    ) -> Iterator[peer_pb2.ChangeNotification]:
        if self.peers is None:
            note = peer_pb2.ChangeNotification(
                name=self.node.name, address=self.node.address, type=peer_pb2.PEER_ADDED
            )
            if self.node.tls_server_name:
                note.tls.server_name = self.node.tls_server_name
            yield note
            self._idle_until_done(context)
            return
        yield from self._follow_peers(self.peers, context)

    def _follow_peers(
        self, peers: PeerDirectory, context: grpc.ServicerContext
    ) -> Iterator[peer_pb2.ChangeNotification]:
        """Every known peer as added, then each change, until the client leaves or we stop."""
        subscription = peers.subscribe()
        try:
            while context.is_active() and not self.ring.closed:
                for change in subscription.take(_PEER_WAKE_S):
                    yield _notification(change)
        finally:
            subscription.close()

    # ---- registration ----------------------------------------------------
    def handlers(self) -> list[grpc.GenericRpcHandler]:
        observer = grpc.method_handlers_generic_handler(
            OBSERVER_SERVICE,
            {
                # Responses are pre-serialized bytes: no serializer.
                "GetFlows": grpc.unary_stream_rpc_method_handler(
                    self.get_flows,
                    request_deserializer=observer_pb2.GetFlowsRequest.FromString,
                ),
                "ServerStatus": _unary(self.server_status, observer_pb2.ServerStatusRequest),
                "GetNodes": _unary(self.get_nodes, observer_pb2.GetNodesRequest),
                "GetNamespaces": _unary(self.get_namespaces, observer_pb2.GetNamespacesRequest),
                "GetAgentEvents": _stream(
                    self.get_agent_events, observer_pb2.GetAgentEventsRequest
                ),
                "GetDebugEvents": _stream(
                    self.get_debug_events, observer_pb2.GetDebugEventsRequest
                ),
            },
        )
        peer = grpc.method_handlers_generic_handler(
            PEER_SERVICE, {"Notify": _stream(self.notify, peer_pb2.NotifyRequest)}
        )
        return [observer, peer]


def _notification(change: PeerChange) -> peer_pb2.ChangeNotification:
    note = peer_pb2.ChangeNotification(
        name=change.peer.name, address=change.peer.address, type=_CHANGE_TYPES[change.type]
    )
    if change.peer.tls_server_name:
        note.tls.server_name = change.peer.tls_server_name
    return note


def _serialize(message: Any) -> bytes:
    data: bytes = message.SerializeToString()
    return data


def _unary(method: Callable[..., Any], request_type: Any) -> grpc.RpcMethodHandler:
    return grpc.unary_unary_rpc_method_handler(
        method, request_deserializer=request_type.FromString, response_serializer=_serialize
    )


def _stream(method: Callable[..., Any], request_type: Any) -> grpc.RpcMethodHandler:
    return grpc.unary_stream_rpc_method_handler(
        method, request_deserializer=request_type.FromString, response_serializer=_serialize
    )
