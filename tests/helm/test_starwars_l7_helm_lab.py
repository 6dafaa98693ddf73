"""The Star Wars demo's second act through helm with the chart's L7 proxy on: the tiefighter
lands, its `PUT /v1/exhaust-port` gets `403 Access denied`, the xwing is dropped at L3/L4, and
the L7 flows come through the relay to the real hubble CLI and `septum observe`. Then toFQDNs
through the lab's CoreDNS to a peer outside the cluster.

One release for the module; the tests are its steps, in order.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from helm_helpers import installed_release  # type: ignore[import-not-found]

from septum.demo import flows, starwars
from septum.demo.release import Release
from septum.demo.waiting import until
from septum.lab.addons import OUTSIDE_NAMES
from septum.lab.lab import Lab
from septum.lab.outside import Peer
from septum.lab.shell import in_netns

pytestmark = [pytest.mark.privileged, pytest.mark.lab]

URL = f"http://{starwars.DEATHSTAR}"


class Act:
    def __init__(self, lab: Lab, release: Release) -> None:
        self.lab = lab
        self.release = release
        self.nodes = sorted(n.name for n in lab.nodes)
        self.since = datetime.now(UTC).isoformat()
        self.hubble = flows.hubble_binary()

    def relay(self) -> str:
        return f"{self.release.relay_pod_ip()}:4245"

    def hubble_json(self, *filters: str) -> list[dict[str, Any]]:
        return flows.hubble_observe(self.hubble, self.relay(), "--since", self.since, *filters)

    def hubble_text(self, *filters: str) -> str:
        proc = subprocess.run(
            [str(self.hubble), "observe", "--server", self.relay(), "--since", self.since,
             *filters],
            capture_output=True, text=True, timeout=60, check=True,
            env={"HOME": "/nonexistent", "PATH": "/usr/bin:/bin"},
        )  # fmt: skip
        return proc.stdout


@pytest.fixture(scope="module")
def act(lab: Lab) -> Iterator[Act]:
    with installed_release(lab, {"agent.l7Proxy.enabled": "true"}) as release:
        try:
            starwars.deploy(lab)
            yield Act(lab, release)
        finally:
            starwars.delete_policy(lab, starwars.POLICY_L7)
            starwars.remove(lab)


def test_the_l7_policy_lands_the_tiefighter_and_refuses_its_exhaust_port(act: Act) -> None:
    policy = starwars.apply_policy(act.lab, starwars.POLICY_L7)
    starwars.wait_enforced(act.lab, policy, act.nodes)
    landing = starwars.ask(act.lab, "tiefighter", "POST", "/v1/request-landing")
    assert (landing.status, landing.body) == (200, "Ship landed"), landing
    exhaust = starwars.ask(act.lab, "tiefighter", "PUT", "/v1/exhaust-port")
    assert (exhaust.status, exhaust.body) == (403, "Access denied"), exhaust
    # The xwing never reaches the proxy: dropped at L3/L4, curl gives up at its deadline.
    xwing = starwars.ask(act.lab, "xwing", "POST", "/v1/request-landing")
    assert xwing.status == 0 and "timed out" in xwing.body.lower(), xwing


def _http(flow: dict[str, Any]) -> tuple[str, str, str, int, str]:
    http = flow["l7"]["http"]
    return (flow["l7"]["type"], http.get("method", ""), http.get("url", ""),
            int(http.get("code", 0)), flow["verdict"])  # fmt: skip


def test_the_l7_flows_come_through_the_relay(act: Act) -> None:
    landing = ("REQUEST", "POST", f"{URL}/v1/request-landing", 0, "FORWARDED")
    landed = ("RESPONSE", "POST", f"{URL}/v1/request-landing", 200, "FORWARDED")
    refused = ("REQUEST", "PUT", f"{URL}/v1/exhaust-port", 403, "DROPPED")

    def all_three() -> list[dict[str, Any]]:
        seen = act.hubble_json("--type", "l7", "--pod", "default/tiefighter")
        return seen if {landing, landed, refused} <= {_http(f) for f in seen} else []

    seen = until("the landing, its answer and the refused PUT through the relay", all_three, 30)
    for flow in seen:
        client, server = (
            ("destination", "source") if flow.get("is_reply") else ("source", "destination")
        )
        assert flow[client]["pod_name"] == "tiefighter", flow
        assert flow[server]["pod_name"].startswith("deathstar-"), flow
        assert flow["traffic_direction"] == "INGRESS", flow  # the deathstar's ingress rule
        # The deciding policy, as on the L3/L4 flows: rule1 allowed, or denied the PUT.
        named = "ingress_allowed_by" if flow["verdict"] == "FORWARDED" else "ingress_denied_by"
        assert [p["name"] for p in flow.get(named, [])] == ["rule1"], flow
    denied = act.hubble_json("--type", "l7", "--http-status", "403")
    assert {_http(f) for f in denied} == {refused}, denied
    puts = act.hubble_json("--type", "l7", "--http-method", "PUT")
    assert {_http(f) for f in puts} == {refused}, puts
    paths = act.hubble_json("--type", "l7", "--http-path", "/v1/request-landing")
    assert {_http(f) for f in paths} == {landing, landed}, paths
    compact = act.hubble_text("--type", "l7", "-o", "compact")
    assert f"http-request FORWARDED (HTTP/1.1 POST {URL}/v1/request-landing)" in compact, compact
    assert f"http-request DROPPED (HTTP/1.1 PUT {URL}/v1/exhaust-port)" in compact, compact
    assert "http-response FORWARDED (HTTP/1.1 200" in compact, compact
    # `septum observe` through the same relay, the same filters.
    mine = flows.septum_observe(act.relay(), "--since", act.since, "--type", "l7",
                                "--http-status", "403")  # fmt: skip
    assert {_http(f) for f in mine} == {refused}, mine
    # The xwing's attempts are L3/L4 drops, never L7 flows.
    drops = act.hubble_json("--from-pod", "default/xwing", "--verdict", "DROPPED")
    assert drops and all(f.get("drop_reason_desc") == "POLICY_DENIED" for f in drops), drops
    assert not act.hubble_json("--type", "l7", "--from-pod", "default/xwing")


# Run in the client pod (the lab's toolbox: the host's python3, no DNS library): one DNS query
# over UDP ("dns") or TCP ("dns-tcp") to the kube-dns Service, or one HTTP GET; prints JSON.
POD_SCRIPT = r"""
import json, random, socket, struct, sys, urllib.request
def query(server, name, tcp):
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.strip(".").split(".")) + b"\0"
    packet = struct.pack(">HHHHHH", random.randrange(65536), 0x0100, 1, 0, 0, 0) + qname
    packet += struct.pack(">HH", 1, 1)
    if tcp:  # RFC 1035 4.2.2: each message behind its two-byte length
        sock = socket.create_connection((server, 53), timeout=5)
        sock.sendall(struct.pack(">H", len(packet)) + packet)
        data = b""
        while len(data) < 2 or len(data) < 2 + struct.unpack(">H", data[:2])[0]:
            data += sock.recv(4096) or b"!" * 65537
        data = data[2:]
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.settimeout(5)
        sock.sendto(packet, (server, 53))
        data = sock.recv(4096)
    at, ips = 12 + len(qname) + 4, []
    for _ in range(struct.unpack(">H", data[6:8])[0]):
        if data[at] & 0xC0 == 0xC0:
            at += 2
        else:
            while data[at]:
                at += data[at] + 1
            at += 1
        rtype, _, ttl, length = struct.unpack(">HHIH", data[at:at + 10])
        if rtype == 1:
            ips.append(socket.inet_ntoa(data[at + 10:at + 14]))
        at += 10 + length
    return {"rcode": data[3] & 15, "ips": ips}
def get(ip):
    try:
        with urllib.request.urlopen(f"http://{ip}/", timeout=2) as response:
            return {"status": response.status}
    except Exception as err:
        return {"error": repr(err)}
op, where = sys.argv[1], sys.argv[2]
print(json.dumps(get(where) if op == "http" else query(where, sys.argv[3], op == "dns-tcp")))
"""

NOERROR, REFUSED = 0, 5
ALLOWED_NAME = "api.outside.example"  # in the DNS pattern and in toFQDNs
OTHER_NAME = "www.outside.example"  # in the DNS pattern only


def _fqdn_policy(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "septum.io/v2",
        "kind": "SeptumNetworkPolicy",
        "metadata": {"name": "to-outside", "namespace": namespace},
        "spec": {
            "endpointSelector": {"matchLabels": {"app": "fqdn-client"}},
            "egress": [
                {
                    "toEndpoints": [
                        {
                            "matchLabels": {
                                "k8s:io.kubernetes.pod.namespace": "kube-system",
                                "k8s:k8s-app": "kube-dns",
                            }
                        }
                    ],  # fmt: skip
                    "toPorts": [
                        {
                            "ports": [{"port": "53", "protocol": "ANY"}],  # UDP and TCP
                            "rules": {"dns": [{"matchPattern": "*.outside.example"}]},
                        }
                    ],  # fmt: skip
                },
                {
                    "toFQDNs": [{"matchName": ALLOWED_NAME}],
                    "toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}]}],
                },
            ],
        },
    }


def _client_pod(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "fqdn-client",
            "namespace": namespace,
            "labels": {"app": "fqdn-client"},
        },  # fmt: skip
        "spec": {"containers": [{"name": "client", "image": "docker.io/tgraf/netperf"}]},
    }


def _web_server(peer: Peer, root: Path) -> subprocess.Popen[bytes]:
    """A plain HTTP server on the peer's documentation address, port 80."""
    argv = [sys.executable, "-m", "http.server", "80", "--bind", peer.address,
            "--directory", str(root)]  # fmt: skip
    return subprocess.Popen(in_netns(peer.netns, argv), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip


def test_to_fqdns_through_coredns(
    act: Act, lab_namespace: Callable[[str], str], outside_peer: Callable[[str], Peer]
) -> None:
    peers = [outside_peer(OUTSIDE_NAMES[name]) for name in (ALLOWED_NAME, OTHER_NAME)]
    with tempfile.TemporaryDirectory() as root:
        servers = [_web_server(peer, Path(root)) for peer in peers]
        try:
            _walk_to_fqdns(act, lab_namespace("slab-fqdn"), peers)
        finally:
            for server in servers:
                server.kill()
                server.wait(10)


def _walk_to_fqdns(act: Act, namespace: str, peers: list[Peer]) -> None:
    lab = act.lab
    dns = lab.get_json("service", "-n", "kube-system", "kube-dns")["spec"]["clusterIP"]
    lab.kubectl("apply", "-f", "-", input_text=json.dumps(_client_pod(namespace)))
    lab.kubectl("wait", "-n", namespace, "--for=condition=Ready", "pod/fqdn-client",
                "--timeout=120s", timeout_s=130)  # fmt: skip

    def run(*args: str) -> dict[str, Any]:
        proc = lab.kubectl("exec", "-n", namespace, "fqdn-client", "--", "python3", "-c",
                           POD_SCRIPT, *args, timeout_s=60)  # fmt: skip
        return dict(json.loads(proc.stdout.strip().splitlines()[-1]))

    allowed_ip, other_ip = (p.address for p in peers)
    # No policy yet: both peers answer, and CoreDNS answers their names.
    until("both outside peers answering", lambda: all(
        "status" in run("http", ip) for ip in (allowed_ip, other_ip)), 30)  # fmt: skip
    assert run("dns", dns, ALLOWED_NAME) == {"rcode": NOERROR, "ips": [allowed_ip]}

    policy = _fqdn_policy(namespace)
    lab.kubectl("apply", "-f", "-", input_text=json.dumps(policy))
    policy = lab.get_json("snp", "-n", namespace, "to-outside")
    starwars.wait_enforced(lab, policy, act.nodes)
    # Before the name is resolved the address is no one's: refused (dropped).
    assert "error" in run("http", allowed_ip)
    # Names outside the pattern: REFUSED by the DNS proxy, though CoreDNS would answer them.
    outside = run("dns", dns, "kubernetes.default.svc.cluster.local")
    assert outside == {"rcode": REFUSED, "ips": []}, outside
    # Over TCP too: the DNS proxy answers it (the entry carries its L7 kind), not the HTTP one.
    outside_tcp = run("dns-tcp", dns, "kubernetes.default.svc.cluster.local")
    assert outside_tcp == {"rcode": REFUSED, "ips": []}, outside_tcp
    assert "error" in run("http", allowed_ip)  # a refused query teaches nothing
    # The name toFQDNs selects: answered through CoreDNS, and then the address is reachable.
    answer = run("dns", dns, ALLOWED_NAME)
    assert answer == {"rcode": NOERROR, "ips": [allowed_ip]}, answer
    assert run("http", allowed_ip) == {"status": 200}
    # A name the DNS rule allows but toFQDNs does not select: resolved, still refused.
    other = run("dns-tcp", dns, OTHER_NAME)
    assert other == {"rcode": NOERROR, "ips": [other_ip]}, other
    assert "error" in run("http", other_ip)
    # The DNS flows through the relay: the refused query DROPPED, the allowed one answered.
    pod = f"{namespace}/fqdn-client"

    def dns_flows() -> list[dict[str, Any]]:
        seen = act.hubble_json("--type", "l7", "--protocol", "dns", "--from-pod", pod)
        queries = {(f["l7"]["dns"].get("query"), f["verdict"]) for f in seen}
        wanted = {(f"{ALLOWED_NAME}.", "FORWARDED"),
                  ("kubernetes.default.svc.cluster.local.", "DROPPED")}  # fmt: skip
        return seen if wanted <= queries else []

    # --fqdn on the L3/L4 flows: the pod's connection to the address names it.
    named = until(
        "the L3/L4 flows to the learned name through the relay (--to-fqdn)",
        lambda: act.hubble_json("--to-fqdn", ALLOWED_NAME, "--from-pod", pod),
        30,
    )
    for flow in named:
        assert flow["IP"]["destination"] == allowed_ip, flow
        assert flow["destination_names"] == [ALLOWED_NAME], flow
    seen = until("the DNS flows through the relay", dns_flows, 30)
    for flow in seen:  # the queries name the policy whose DNS rule allowed or refused them
        named = "egress_allowed_by" if flow["verdict"] == "FORWARDED" else "egress_denied_by"
        assert [p["name"] for p in flow.get(named, [])] == ["to-outside"], flow
