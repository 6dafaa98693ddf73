"""Which agents the relay knows, and whether each answers.

The relay learns its nodes as Hubble Relay does: it follows `peer.Peer/Notify` on each seed
(`--peer-service`, an agent's Observer; `--agent`, one per agent), which says PEER_ADDED,
PEER_UPDATED and PEER_DELETED with each node's name, Observer address and TLS server name. A
seed whose stream breaks is followed again after a backoff; its nodes stay known. Every known
node is checked with ServerStatus: one that answers is NODE_CONNECTED (its last status kept for
GetNodes and ServerStatus), one that does not is NODE_UNAVAILABLE and is tried again, with a
growing backoff, until it answers; then whoever watches (follow streams) is told it is back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import grpclib.exceptions
from grpclib.client import Channel, UnaryStreamMethod, UnaryUnaryMethod

from septum.dataplane.observe.api.observer import observer_pb2
from septum.dataplane.observe.api.peer import peer_pb2
from septum.dataplane.observe.api.relay import relay_pb2
from septum.relay.tls import Address, AgentDialer, parse_address

log = logging.getLogger(__name__)

NOTIFY_PATH = "/peer.Peer/Notify"
SERVER_STATUS_PATH = "/observer.Observer/ServerStatus"
# What a failed call to an agent can raise: refused or reset connections, timeouts, gRPC
# errors, an HTTP/2 or TLS failure underneath.
CALL_ERRORS = (
    OSError,
    asyncio.TimeoutError,
    grpclib.exceptions.GRPCError,
    grpclib.exceptions.StreamTerminatedError,
    grpclib.exceptions.ProtocolError,
    ConnectionError,
)


@dataclass(frozen=True)
class Backoff:
    """Waits between attempts: first_s, doubling, at most max_s."""

    first_s: float = 0.2
    max_s: float = 10.0

    def after(self, attempt: int) -> float:
        return float(min(self.max_s, self.first_s * (2 ** min(attempt, 30))))


@dataclass
class Node:
    """One agent as the relay sees it."""

    name: str
    address: Address
    tls_server_name: str = ""
    state: int = relay_pb2.NODE_UNAVAILABLE
    last_error: str = "not checked yet"
    status: observer_pb2.ServerStatusResponse | None = None
    channel: Channel | None = None
    failures: int = 0
    checked: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def connected(self) -> bool:
        return self.state == relay_pb2.NODE_CONNECTED


class PeerManager:
    """The known nodes, kept current from the seeds' Notify streams and status checks."""

    def __init__(
        self,
        seeds: list[tuple[str, str]],  # (setting, address), e.g. ("--agent", "10.0.0.1:4244")
        dialer: AgentDialer,
        check_interval_s: float = 5.0,
        call_timeout_s: float = 2.0,
        backoff: Backoff = Backoff(),
    ) -> None:
        self.seeds = [(setting, parse_address(value, setting)) for setting, value in seeds]
        self.dialer = dialer
        self.check_interval_s = check_interval_s
        self.call_timeout_s = call_timeout_s
        self.backoff = backoff
        self.nodes: dict[str, Node] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._checkers: dict[str, asyncio.Task[None]] = {}
        self._watchers: set[Callable[[Node], None]] = set()
        # Set once a seed has answered (its first notification) or failed once.
        self._seeds_heard: list[asyncio.Event] = []
        self.started_ns = time.monotonic_ns()

    # ---- lifecycle --------------------------------------------------------
    def start(self) -> None:
        for setting, address in self.seeds:
            heard = asyncio.Event()
            self._seeds_heard.append(heard)
            name = f"seed {setting} {address}"
            self._tasks.append(asyncio.create_task(self._follow_seed(address, heard), name=name))

    async def stop(self) -> None:
        tasks = [*self._tasks, *self._checkers.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for node in self.nodes.values():
            if node.channel is not None:
                node.channel.close()
                node.channel = None

    # ---- views --------------------------------------------------------------
    def connected(self) -> list[Node]:
        return sorted((n for n in self.nodes.values() if n.connected), key=lambda n: n.name)

    def unavailable(self) -> list[Node]:
        return sorted((n for n in self.nodes.values() if not n.connected), key=lambda n: n.name)

    def watch(self, callback: Callable[[Node], None]) -> Callable[[], None]:
        """Call `callback(node)` whenever a node becomes connected; returns the unsubscribe."""
        self._watchers.add(callback)
        return lambda: self._watchers.discard(callback)

    async def wait_checked(self, timeout_s: float) -> None:
        """Until every seed has been heard from and every node it named checked once (or the
        timeout passes): a call that comes just after the start sees every node."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        for stage in ("seeds", "nodes"):
            if stage == "seeds":
                events = self._seeds_heard
            else:
                events = [node.checked for node in self.nodes.values()]
            pending = [asyncio.ensure_future(e.wait()) for e in events if not e.is_set()]
            if pending:
                _, not_done = await asyncio.wait(pending, timeout=max(0.0, deadline - loop.time()))
                for future in not_done:
                    future.cancel()

    def channel(self, node: Node) -> Channel:
        if node.channel is None:
            node.channel = self.dialer.channel(node.address, node.tls_server_name)
        return node.channel

    # ---- the seeds ------------------------------------------------------------
    async def _follow_seed(self, address: Address, heard: asyncio.Event) -> None:
        attempt = 0
        while True:
            channel = self.dialer.channel(address)
            try:
                notify = UnaryStreamMethod(
                    channel, NOTIFY_PATH, peer_pb2.NotifyRequest, peer_pb2.ChangeNotification
                )
                async with notify.open() as stream:
                    await stream.send_message(peer_pb2.NotifyRequest(), end=True)
                    async for note in stream:
                        attempt = 0
                        self._apply(note, address)
                        heard.set()
                reason = "the stream ended"
            except CALL_ERRORS as err:
                reason = f"{type(err).__name__}: {err}"
            finally:
                channel.close()
                heard.set()
            delay = self.backoff.after(attempt)
            attempt += 1
            log.info("peer service %s: %s; following it again in %.1f s", address, reason, delay)
            await asyncio.sleep(delay)

    def _apply(self, note: peer_pb2.ChangeNotification, seed: Address) -> None:
        if note.type == peer_pb2.PEER_DELETED:
            self._remove(note.name)
            return
        try:
            address = parse_address(note.address, f"peer {note.name!r} address")
        except ValueError as err:
            log.warning("peer %s: %s; ignored", note.name, err)
            return
        if address.unix_path is None and address.host in ("", "0.0.0.0", "::"):
            # An agent that listens on every address: reach it where its seed was reached.
            address = Address(host=seed.host, port=address.port) if seed.host else seed
        server_name = note.tls.server_name
        node = self.nodes.get(note.name)
        if node is not None and (node.address, node.tls_server_name) == (address, server_name):
            return
        if node is not None:
            self._remove(note.name)
        log.info("peer %s added at %s", note.name, address)
        node = Node(note.name, address, server_name)
        self.nodes[node.name] = node
        self._checkers[node.name] = asyncio.create_task(self._check_loop(node))

    def _remove(self, name: str) -> None:
        node = self.nodes.pop(name, None)
        checker = self._checkers.pop(name, None)
        if checker is not None:
            checker.cancel()
        if node is not None:
            log.info("peer %s deleted", name)
            if node.channel is not None:
                node.channel.close()

    # ---- status checks ----------------------------------------------------------
    async def _check_loop(self, node: Node) -> None:
        while True:
            await self.check(node)
            if node.connected:
                await asyncio.sleep(self.check_interval_s)
            else:
                await asyncio.sleep(self.backoff.after(node.failures - 1))

    async def check(self, node: Node) -> observer_pb2.ServerStatusResponse | None:
        """Ask the node for its ServerStatus now; updates its state."""
        was_connected = node.connected
        try:
            method = UnaryUnaryMethod(
                self.channel(node),
                SERVER_STATUS_PATH,
                observer_pb2.ServerStatusRequest,
                observer_pb2.ServerStatusResponse,
            )
            status = await method(observer_pb2.ServerStatusRequest(), timeout=self.call_timeout_s)
        except CALL_ERRORS as err:
            self.mark_unavailable(node, f"{type(err).__name__}: {err}")
            return None
        finally:
            node.checked.set()
        node.status = status
        node.failures = 0
        node.last_error = ""
        node.state = relay_pb2.NODE_CONNECTED
        if not was_connected:
            log.info("peer %s connected (%s)", node.name, node.address)
            for callback in list(self._watchers):
                callback(node)
        return status

    def mark_unavailable(self, node: Node, reason: str) -> None:
        if node.connected:
            log.warning("peer %s unavailable: %s", node.name, reason)
        node.state = relay_pb2.NODE_UNAVAILABLE
        node.last_error = reason
        node.failures += 1
        if node.channel is not None:  # the next attempt dials afresh
            node.channel.close()
            node.channel = None
