"""The node's L7 proxy service with the real engine's rules behind the real redirect: a
SeptumNetworkPolicy (Cilium's spec) with rules.http on the server pod, the engine's merged L7
rules (explain) as the proxy's policy, the server-side (ingress) proxy on its own port."""

from __future__ import annotations

import http.client
import secrets
import socket
import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer

import pytest

from septum.agent.l7.httpproxy import HttpRecord
from septum.agent.l7.service import L7Ports, L7ProxyService
from septum.dataplane import l7redirect, netns
from septum.dataplane.abi import TrafficDirection
from septum.dataplane.config import DatapathConfig
from septum.dataplane.datapath import EndpointSpec, NodeDatapath
from septum.dataplane.policy import EndpointPolicy, PolicyEntry
from septum.dataplane.sandbox import Sandbox, open_socket, sandbox_namespaces
from septum.operator.engine.explain import explain
from septum.operator.engine.state import Engine

from .test_httpproxy_privileged import _Handler

pytestmark = pytest.mark.privileged

CLIENT_IP, SERVER_IP = "10.94.0.1", "10.94.0.3"
CLIENT_ID, SERVER_ID = 2301, 2303
PORTS = L7Ports(egress=15090, ingress=15091)


def _engine() -> Engine:
    engine = Engine()
    pods = [("client", CLIENT_IP), ("web", SERVER_IP)]
    engine.load(
        namespaces=[{"metadata": {"name": "a"}}],
        pods=[
            {
                "metadata": {"name": name, "namespace": "a", "labels": {"app": name}},
                "spec": {"containers": [{}]},
                "status": {"podIP": ip},
            }
            for name, ip in pods
        ],
        nodes=[],
        policies=[
            {
                "apiVersion": "septum.io/v1alpha1",
                "kind": "SeptumNetworkPolicy",
                "metadata": {"name": "landing", "namespace": "a"},
                "spec": {
                    "endpointSelector": {"matchLabels": {"app": "web"}},
                    "ingress": [
                        {
                            "fromEndpoints": [{"matchLabels": {"app": "client"}}],
                            "toPorts": [
                                {
                                    "ports": [{"port": "80", "protocol": "TCP"}],
                                    "rules": {
                                        "http": [{"method": "POST", "path": "/v1/request-landing"}]
                                    },
                                }
                            ],
                        }
                    ],
                },
            }
        ],
    )
    return engine


@pytest.fixture
def service_world() -> Iterator[tuple[Sandbox, list[tuple[HttpRecord, bool]]]]:
    prefix = f"sls{secrets.token_hex(2)}"
    sandbox = Sandbox(prefix)
    node = server = service = None
    records: list[tuple[HttpRecord, bool]] = []
    try:
        node = NodeDatapath(DatapathConfig(node_name=f"t-{prefix}", netns=sandbox.node_ns))
        client = sandbox.add_pod("c", CLIENT_IP)
        web = sandbox.add_pod("s", SERVER_IP)
        node.upsert_endpoint(EndpointSpec(1, client.host_interface, CLIENT_ID, CLIENT_IP))
        node.upsert_endpoint(EndpointSpec(2, web.host_interface, SERVER_ID, SERVER_IP))
        node.upsert_prefixes({f"{CLIENT_IP}/32": CLIENT_ID, f"{SERVER_IP}/32": SERVER_ID})
        engine = _engine()

        def lookup(source: str, destination: str, port: int, ingress: bool):  # type: ignore[no-untyped-def]
            verdict = explain(engine, source, destination, port)
            side = verdict.ingress if ingress else verdict.egress
            return side.l7_rules.http if side else ()

        service = L7ProxyService(
            lookup,
            {CLIENT_IP: CLIENT_ID, SERVER_IP: SERVER_ID}.__getitem__,
            ns=sandbox.node_ns,
            ports=PORTS,
            on_record=lambda record, ingress: records.append((record, ingress)),
        )
        service.start()
        node.replace_policy(
            2,
            EndpointPolicy(
                enforce_ingress=True,
                entries=(
                    PolicyEntry(
                        TrafficDirection.INGRESS,
                        CLIENT_ID,
                        6,
                        80,
                        rule_id=5,
                        l7_proxy_port=service.port_for(ingress=True),
                    ),
                ),
            ),
        )
        with netns.entered(web.name):
            server = ThreadingHTTPServer((SERVER_IP, 80), _Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        yield sandbox, records
    finally:
        if server:
            server.shutdown()
            server.server_close()
        if service:
            service.stop()
            l7redirect.remove_proxy_routing(sandbox.node_ns)
        if node:
            node.teardown()
        sandbox.close()
        assert sandbox_namespaces(prefix) == []


def test_the_engines_http_rules_are_enforced_by_the_ingress_proxy(service_world) -> None:
    sandbox, records = service_world

    class Conn(http.client.HTTPConnection):
        def connect(self) -> None:
            self.sock = open_socket(f"{sandbox.prefix}-c", socket.AF_INET, socket.SOCK_STREAM)
            self.sock.settimeout(5)
            self.sock.connect((self.host, self.port))

    conn = Conn(SERVER_IP, 80, timeout=5)
    try:
        conn.request("POST", "/v1/request-landing", body=b"")
        landed = conn.getresponse()
        assert (landed.status, landed.read()) == (200, b"POST /v1/request-landing")
        conn.request("PUT", "/v1/exhaust-port", body=b"")
        refused = conn.getresponse()
        assert (refused.status, refused.read()) == (403, b"Access denied\r\n")
    finally:
        conn.close()
    assert [(r.method, r.code, ingress) for r, ingress in records[:2]] == [
        ("POST", 200, True),
        ("PUT", 403, True),
    ]
