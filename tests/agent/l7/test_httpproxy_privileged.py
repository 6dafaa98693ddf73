"""The HTTP proxy behind the real L7 redirect: pods as namespaces on a node datapath, the
client's egress redirected to septum.agent.l7.httpproxy, a real HTTP/1.1 server in the server
pod.  Allow and deny by method and path, the 403 body, keep-alive with a denied request in the
middle, pipelining, and the upstream decided by the server's L3/L4 policy with the client's
identity."""

from __future__ import annotations

import asyncio
import http.client
import re
import secrets
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from septum.agent.l7.httpproxy import Connection, HttpProxy, HttpRecord
from septum.agent.l7.httprules import HttpPolicy, policy_from_fields
from septum.dataplane import l7redirect, netns
from septum.dataplane.abi import TrafficDirection
from septum.dataplane.config import DatapathConfig
from septum.dataplane.datapath import EndpointSpec, NodeDatapath
from septum.dataplane.policy import EndpointPolicy, PolicyEntry
from septum.dataplane.sandbox import Sandbox, open_socket, sandbox_namespaces

pytestmark = pytest.mark.privileged

CLIENT_ID, OTHER_ID, SERVER_ID = 2201, 2202, 2203
SERVER_IP = "10.98.0.3"
PROXY_PORT = 15002
RULES = [
    {"method": "GET", "path": "/public.*"},
    {"method": "POST", "path": "/v1/request-landing"},
]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        body = f"{self.command} {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


@dataclass
class Lab:
    sandbox: Sandbox
    node: NodeDatapath
    records: list[HttpRecord] = field(default_factory=list)
    connections: list[Connection] = field(default_factory=list)
    upstream_identity: int = CLIENT_ID

    @property
    def client(self) -> str:
        return f"{self.sandbox.prefix}-c"


class _ProxyThread:
    """The proxy on its own event loop, in a thread, so the test can use blocking clients."""

    def __init__(self, hworld: Lab, policy: HttpPolicy) -> None:
        def policy_for(conn: Connection) -> HttpPolicy:
            hworld.connections.append(conn)
            return policy

        self.proxy = HttpProxy(
            policy_for,
            lambda conn: hworld.upstream_identity,
            ingress=False,
            ns=hworld.sandbox.node_ns,
            on_record=hworld.records.append,
        )
        self.listener = l7redirect.open_listener(PROXY_PORT, ns=hworld.sandbox.node_ns)
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.ready.wait(5)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self.proxy.serve(self.listener))
        self.ready.set()
        self.loop.run_forever()

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.proxy.close(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()
        self.listener.close()


@pytest.fixture
def hworld() -> Iterator[Lab]:
    prefix = f"shp{secrets.token_hex(2)}"
    sandbox = Sandbox(prefix)
    node = None
    server = None
    try:
        node = NodeDatapath(DatapathConfig(node_name=f"t-{prefix}", netns=sandbox.node_ns))
        pods = [
            sandbox.add_pod("c", "10.98.0.1"),
            sandbox.add_pod("o", "10.98.0.2"),
            sandbox.add_pod("s", SERVER_IP),
        ]
        for endpoint_id, (pod, identity) in enumerate(
            zip(pods, (CLIENT_ID, OTHER_ID, SERVER_ID), strict=True), 1
        ):
            node.upsert_endpoint(EndpointSpec(endpoint_id, pod.host_interface, identity, pod.ipv4))
        node.upsert_prefixes(
            {f"{p.ipv4}/32": i for p, i in zip(pods, (CLIENT_ID, OTHER_ID, SERVER_ID), strict=True)}
        )
        l7redirect.install_proxy_routing(sandbox.node_ns)
        with netns.entered(pods[2].name):
            server = ThreadingHTTPServer((SERVER_IP, 80), _Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        node.replace_policy(
            1,
            EndpointPolicy(
                enforce_egress=True,
                entries=(
                    PolicyEntry(
                        TrafficDirection.EGRESS,
                        SERVER_ID,
                        6,
                        80,
                        rule_id=81,
                        l7_proxy_port=PROXY_PORT,
                    ),
                ),
            ),
        )
        node.replace_policy(
            3,
            EndpointPolicy(
                enforce_ingress=True,
                entries=(PolicyEntry(TrafficDirection.INGRESS, CLIENT_ID, 6, 80, rule_id=82),),
            ),
        )
        yield Lab(sandbox, node)
    finally:
        if server:
            server.shutdown()
            server.server_close()
        if node:
            node.teardown()
        sandbox.close()
        assert sandbox_namespaces(prefix) == []


@pytest.fixture
def proxy(hworld: Lab) -> Iterator[_ProxyThread]:
    running = _ProxyThread(hworld, policy_from_fields(RULES))
    try:
        yield running
    finally:
        running.close()


class PodHTTPConnection(http.client.HTTPConnection):
    def __init__(self, ns: str, host: str, port: int = 80) -> None:
        super().__init__(host, port, timeout=5)
        self.ns = ns

    def connect(self) -> None:
        self.sock = open_socket(self.ns, socket.AF_INET, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect((self.host, self.port))


def _request(conn: http.client.HTTPConnection, method: str, path: str) -> tuple[int, bytes]:
    conn.request(method, path, body=b"" if method in ("POST", "PUT") else None)
    response = conn.getresponse()
    return response.status, response.read()


def test_allow_and_deny_by_method_and_path_on_one_keepalive_connection(hworld, proxy):
    conn = PodHTTPConnection(hworld.client, SERVER_IP)
    try:
        assert _request(conn, "GET", "/public/index") == (200, b"GET /public/index")
        first_socket = conn.sock
        assert _request(conn, "PUT", "/v1/exhaust-port") == (403, b"Access denied\r\n")
        assert _request(conn, "GET", "/private") == (403, b"Access denied\r\n")
        assert _request(conn, "POST", "/v1/request-landing") == (200, b"POST /v1/request-landing")
        assert _request(conn, "POST", "/v1/request-landing/x") == (403, b"Access denied\r\n")
        assert conn.sock is first_socket  # the denied requests kept the connection
    finally:
        conn.close()
    assert len(set(hworld.connections)) == 1  # one client connection, asked per request
    assert hworld.connections[0].destination == SERVER_IP
    assert [(r.method, r.code, r.allowed) for r in hworld.records] == [
        ("GET", 200, True),
        ("PUT", 403, False),
        ("GET", 403, False),
        ("POST", 200, True),
        ("POST", 403, False),
    ]
    assert hworld.records[0].url == f"http://{SERVER_IP}/public/index"


def test_pipelined_requests_are_answered_in_order(hworld, proxy):
    sock = open_socket(hworld.client, socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(5)
    try:
        sock.connect((SERVER_IP, 80))
        sock.sendall(
            b"GET /public/1 HTTP/1.1\r\nHost: s\r\n\r\n"
            b"PUT /secret HTTP/1.1\r\nHost: s\r\nContent-Length: 0\r\n\r\n"
            b"GET /public/2 HTTP/1.1\r\nHost: s\r\nConnection: close\r\n\r\n"
        )
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    finally:
        sock.close()
    statuses = re.findall(rb"HTTP/1\.1 (\d{3})", data)  # bodies end without a line break
    assert statuses == [b"200", b"403", b"200"]
    assert (
        data.index(b"GET /public/1") < data.index(b"Access denied") < data.index(b"GET /public/2")
    )


def test_upstream_passes_l3l4_only_with_the_identity_of_an_allowed_client(hworld, proxy):
    hworld.upstream_identity = OTHER_ID  # the server admits CLIENT_ID only
    conn = PodHTTPConnection(hworld.client, SERVER_IP)
    try:
        with pytest.raises(OSError):
            _request(conn, "GET", "/public/x")
    finally:
        conn.close()
    hworld.upstream_identity = CLIENT_ID
    conn = PodHTTPConnection(hworld.client, SERVER_IP)
    try:
        assert _request(conn, "GET", "/public/x")[0] == 200
    finally:
        conn.close()
