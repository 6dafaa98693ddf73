"""The L7 redirect (bpf/lib/proxy.h, septum.dataplane.l7redirect) on real namespaces, veths and
sockets: a connection whose policy entry carries an L7 proxy port reaches the proxy's socket
in the node namespace with its original destination, on the client side (egress, socket
assign) and on the server side (ingress, hairpin); no proxy means a drop with its own reason;
the proxy's upstream is decided with the identity its mark carries."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest

from septum.dataplane import l7redirect, netns
from septum.dataplane.abi import DropReason, TrafficDirection, Verdict
from septum.dataplane.datapath import EndpointSpec, NodeDatapath
from septum.dataplane.errors import ProxyRedirectError
from septum.dataplane.policy import EndpointPolicy, PolicyEntry
from septum.dataplane.sandbox import Sandbox, TcpServer, echo, tcp_connect, tcp_connection

from .test_traffic_privileged import wait_for_flows

pytestmark = pytest.mark.privileged

INGRESS, EGRESS = TrafficDirection.INGRESS, TrafficDirection.EGRESS
CLIENT_ID, OTHER_ID, SERVER_ID = 2101, 2102, 2103
CLIENT, SERVER = 1, 3
TCP = 6
PROXY_PORT = 15001
SERVER_IP = "10.97.0.3"


class ForwardingProxy:
    """A transparent TCP proxy in the node namespace: each accepted connection is copied to
    its original destination over an upstream socket marked with the client's identity."""

    def __init__(self, ns: str, identity: int, *, ingress: bool) -> None:
        self.ns = ns
        self.identity = identity
        self.ingress = ingress
        self.destinations: list[tuple[str, int]] = []
        self.listener = l7redirect.open_listener(PROXY_PORT, ns=ns)
        self.listener.settimeout(0.2)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []
        self._accept = threading.Thread(target=self._serve, daemon=True)
        self._accept.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._sockets.append(client)
            destination = l7redirect.original_destination(client)
            self.destinations.append(destination)
            upstream = l7redirect.open_upstream(
                destination[0], self.identity, ingress=self.ingress, ns=self.ns
            )
            self._sockets.append(upstream)
            upstream.settimeout(2)
            try:
                upstream.connect(destination)
            except OSError:
                client.close()
                continue
            for a, b in ((client, upstream), (upstream, client)):
                thread = threading.Thread(target=self._pump, args=(a, b), daemon=True)
                thread.start()
                self._threads.append(thread)

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        src.settimeout(5)
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self._stop.set()
        self.listener.close()
        self._accept.join(timeout=5)
        for thread in self._threads:
            thread.join(timeout=6)
        for sock in self._sockets:
            sock.close()


@pytest.fixture
def pods(node: NodeDatapath, sandbox: Sandbox) -> Iterator[Sandbox]:
    client = sandbox.add_pod("c", "10.97.0.1")
    other = sandbox.add_pod("o", "10.97.0.2")
    server = sandbox.add_pod("s", SERVER_IP)
    for endpoint_id, pod, identity in (
        (CLIENT, client, CLIENT_ID),
        (2, other, OTHER_ID),
        (SERVER, server, SERVER_ID),
    ):
        node.upsert_endpoint(EndpointSpec(endpoint_id, pod.host_interface, identity, pod.ipv4))
    node.upsert_prefixes(
        {
            f"{p.ipv4}/32": i
            for p, i in ((client, CLIENT_ID), (other, OTHER_ID), (server, SERVER_ID))
        }
    )
    l7redirect.install_proxy_routing(sandbox.node_ns)
    echo_server = TcpServer(server.name, "0.0.0.0", 8080)
    try:
        yield sandbox
    finally:
        echo_server.close()
        l7redirect.remove_proxy_routing(sandbox.node_ns)


def _client_egress_l7(node: NodeDatapath) -> None:
    node.replace_policy(
        CLIENT,
        EndpointPolicy(
            enforce_egress=True,
            entries=(
                PolicyEntry(EGRESS, SERVER_ID, TCP, 8080, rule_id=71, l7_proxy_port=PROXY_PORT),
            ),
        ),
    )


def _server_ingress(node: NodeDatapath, *, l7: bool) -> None:
    node.replace_policy(
        SERVER,
        EndpointPolicy(
            enforce_ingress=True,
            entries=(
                PolicyEntry(
                    INGRESS, CLIENT_ID, TCP, 8080, rule_id=72, l7_proxy_port=PROXY_PORT if l7 else 0
                ),
            ),
        ),
    )


def test_egress_connection_reaches_the_proxy_with_its_original_destination(node, pods):
    _client_egress_l7(node)
    _server_ingress(node, l7=False)
    proxy = ForwardingProxy(pods.node_ns, CLIENT_ID, ingress=False)
    try:
        assert tcp_connect(f"{pods.prefix}-c", SERVER_IP, 8080)
        assert tcp_connect(f"{pods.prefix}-c", SERVER_IP, 8080)
    finally:
        proxy.close()
    assert proxy.destinations == [(SERVER_IP, 8080), (SERVER_IP, 8080)]


def test_ingress_connection_is_hairpinned_to_the_proxy(node, pods):
    _server_ingress(node, l7=True)
    proxy = ForwardingProxy(pods.node_ns, CLIENT_ID, ingress=True)
    try:
        assert tcp_connect(f"{pods.prefix}-c", SERVER_IP, 8080)
        # not redirected again: the proxy saw the client's connection only
    finally:
        proxy.close()
    assert proxy.destinations == [(SERVER_IP, 8080)]
    # other traffic is untouched: the other pod is still denied at L3/L4
    assert not tcp_connect(f"{pods.prefix}-o", SERVER_IP, 8080, timeout_s=0.5)


def test_no_proxy_fails_closed_with_its_own_drop_reason(node, pods):
    _client_egress_l7(node)
    _server_ingress(node, l7=False)
    assert not tcp_connect(f"{pods.prefix}-c", SERVER_IP, 8080, timeout_s=0.5)
    drops = wait_for_flows(
        node,
        lambda f: f.verdict == Verdict.DROPPED and f.drop_reason == DropReason.PROXY_LOOKUP_FAILED,
    )
    assert (drops[0].dst_ip, drops[0].dst_port) == (SERVER_IP, 8080)
    # server side: no ingress proxy either
    _server_ingress(node, l7=True)
    node.replace_policy(CLIENT, EndpointPolicy())
    assert not tcp_connect(f"{pods.prefix}-c", SERVER_IP, 8080, timeout_s=0.5)
    wait_for_flows(
        node,
        lambda f: f.drop_reason == DropReason.PROXY_LOOKUP_FAILED and f.direction == INGRESS,
    )


def _upstream_connects(ns: str, identity: int | None) -> bool:
    if identity is None:
        with netns.entered(ns):
            sock = socket.socket()
    else:
        sock = l7redirect.open_upstream(SERVER_IP, identity, ingress=True, ns=ns)
    sock.settimeout(0.5)
    try:
        sock.connect((SERVER_IP, 8080))
        sock.sendall(b"x")
        return sock.recv(1) == b"x"
    except OSError:
        return False
    finally:
        sock.close()


def test_upstream_is_decided_with_the_identity_in_its_mark(node, pods):
    _server_ingress(node, l7=True)  # an ingress proxy's upstream is not redirected again
    assert _upstream_connects(pods.node_ns, CLIENT_ID)
    assert not _upstream_connects(pods.node_ns, OTHER_ID)
    assert not _upstream_connects(pods.node_ns, None)  # the node itself (host) is not allowed


def test_bad_arguments_name_the_field():
    with pytest.raises(ProxyRedirectError, match="identity"):
        l7redirect.proxy_mark(0, ingress=True)
    with pytest.raises(ProxyRedirectError, match="port"):
        l7redirect.open_listener(0)
    assert l7redirect.proxy_mark(0x123456, ingress=False) == 0x34560B12


def test_proxy_restart_cuts_existing_connections_and_enforces_new_ones_at_once(node, pods):
    _client_egress_l7(node)
    _server_ingress(node, l7=False)
    proxy = ForwardingProxy(pods.node_ns, CLIENT_ID, ingress=False)
    client = f"{pods.prefix}-c"
    try:
        with tcp_connection(client, SERVER_IP, 8080) as existing:
            assert echo(existing)
            proxy.close()  # the proxy stops: its sockets are gone
            # while it is down, new connections fail closed
            assert not tcp_connect(client, SERVER_IP, 8080, timeout_s=0.5)
            proxy = ForwardingProxy(pods.node_ns, CLIENT_ID, ingress=False)
            started = time.monotonic()
            # a new connection is enforced by the new proxy at once
            assert tcp_connect(client, SERVER_IP, 8080, timeout_s=1.0)
            assert time.monotonic() - started < 1.0
            # the old connection ended with the proxy (a stopped process's sockets close)
            assert not echo(existing)
    finally:
        proxy.close()


def _notrack_rules(ns: str, binary: str) -> list[str]:
    listed = subprocess.run(
        ["ip", "netns", "exec", ns, binary, "-w", "5", "-t", "raw", "-S", "PREROUTING"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return [line for line in listed.splitlines() if "NOTRACK for proxy traffic" in line]


def test_proxy_traffic_is_left_untracked_once_and_the_rule_goes_with_the_routing() -> None:
    """The hairpinned (ingress) redirect re-enters the node's stack without its conntrack
    entry; tracked again, a same-node ClusterIP connection's NAT clashed (the lab's Star Wars
    L7 act, tests/helm/test_starwars_l7_helm_lab.py, is the behaviour this rule fixes)."""
    ns = f"sl7nt-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        l7redirect.install_proxy_routing(ns)
        l7redirect.install_proxy_routing(ns)  # again: still one copy
        for binary in ("iptables", "ip6tables"):
            (rule,) = _notrack_rules(ns, binary)
            assert "--mark 0x200/0xf00" in rule and rule.endswith("-j CT --notrack"), rule
        l7redirect.remove_proxy_routing(ns)
        assert _notrack_rules(ns, "iptables") == _notrack_rules(ns, "ip6tables") == []
    finally:
        subprocess.run(["ip", "netns", "delete", ns], check=False)


def proxy_routing_left(ns: str) -> list[str]:
    """Every piece of the proxy routing still in `ns`: rules, table 2004's routes, NOTRACK."""
    left: list[str] = []
    for family in ("-4", "-6"):
        rules = subprocess.run(
            ["ip", "-n", ns, family, "rule", "show"], capture_output=True, text=True, check=True
        ).stdout
        left += [f"{family} rule {line}" for line in rules.splitlines() if "0x200/0xf00" in line]
        routes = subprocess.run(
            ["ip", "-n", ns, family, "route", "show", "table", "2004"],
            capture_output=True, text=True, check=False,
        ).stdout  # fmt: skip
        left += [f"{family} route {line}" for line in routes.splitlines() if line.strip()]
    for binary in ("iptables", "ip6tables"):
        left += [f"{binary} {rule}" for rule in _notrack_rules(ns, binary)]
    return left


def test_a_half_applied_proxy_routing_is_rolled_back_with_a_clear_error() -> None:
    """IPv6 disabled on lo: the IPv4 rule and route, the IPv6 rule and the early demux are in
    place when the IPv6 route fails; all of it goes, and the error names the step."""
    ns = f"sl7rb-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        subprocess.run(
            ["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.lo.disable_ipv6=1"],
            check=True,
        )
        assert l7redirect.early_demux(ns) == "1"
        with pytest.raises(ProxyRedirectError, match=r"-6 route replace.*rolled back"):
            l7redirect.install_proxy_routing(ns)
        assert proxy_routing_left(ns) == []
        assert l7redirect.early_demux(ns) == "1"
    finally:
        subprocess.run(["ip", "netns", "delete", ns], check=False)


def test_install_returns_the_early_demux_it_found_and_remove_puts_it_back() -> None:
    ns = f"sl7ed-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        assert l7redirect.install_proxy_routing(ns) == "1"
        assert l7redirect.early_demux(ns) == "0"
        # again (a restarting agent): the 0 found is the earlier install's, not the node's
        assert l7redirect.install_proxy_routing(ns) is None
        assert l7redirect.remove_proxy_routing(ns, restore_early_demux="1") is True
        assert proxy_routing_left(ns) == []
        assert l7redirect.early_demux(ns) == "1"
        assert l7redirect.remove_proxy_routing(ns) is False  # nothing left: tolerated
        with pytest.raises(ProxyRedirectError, match="early_demux"):
            l7redirect.set_early_demux("2", ns)
    finally:
        subprocess.run(["ip", "netns", "delete", ns], check=False)
