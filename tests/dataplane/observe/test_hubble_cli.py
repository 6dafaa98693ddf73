"""The real `hubble` CLI (built from cilium/cilium) against Septum's Observer.

What hubble prints must be right, not merely parse: every assertion checks
the pods, ports, verdicts and counts the test fed in.
"""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import time
from pathlib import Path

import observe_helpers as h
import pytest

# Every test here runs the Go-built hubble CLI (the `hubble` fixture may build it).
pytestmark = pytest.mark.lab

DEATHSTAR = f"empire/{h.DEATHSTAR.pod_name}"


@pytest.fixture
def fed(observer: h.RunningObserver) -> h.RunningObserver:
    observer.push(
        # allowed new connection xwing -> deathstar:80
        h.event(src_port=41000, rule_id=1),
        # its reply, seen at the deathstar's egress
        h.reply_event(41000),
        # a denied connection xwing -> deathstar:8080
        h.event(src_port=41001, dst_port=8080, event_type=1, verdict=2, drop_reason=133),
        # UDP between two empire pods over IPv6
        h.event(
            h.TIEFIGHTER, h.DEATHSTAR, v6=True, protocol=17, src_port=5353, dst_port=53, tcp_flags=0
        ),
    )
    return observer


def run(hubble: Path, observer: h.RunningObserver, *args: str, timeout: float = 30) -> str:
    env = {**os.environ, "HOME": str(observer.socket.parent)}  # no stray hubble config
    done = subprocess.run(
        [str(hubble), *args, "--server", observer.target],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert "version is lower" not in done.stderr  # our hubble-server-version header is accepted
    return done.stdout


TIME = r"[A-Z][a-z]{2} +\d+ \d\d:\d\d:\d\d\.\d{3}"


def test_observe_compact(hubble: Path, fed: h.RunningObserver) -> None:
    lines = run(hubble, fed, "observe", "-o", "compact").splitlines()
    expected = [
        rf"default/xwing:41000 \(ID:1001\) -> {DEATHSTAR}:80 \(ID:1002\) "
        r"policy-verdict:L3-L4 INGRESS ALLOWED \(TCP Flags: SYN\)",
        rf"default/xwing:41000 \(ID:1001\) <- {DEATHSTAR}:80 \(ID:1002\) "
        r"from-endpoint FORWARDED \(TCP Flags: SYN, ACK\)",
        rf"default/xwing:41001 \(ID:1001\) -> {DEATHSTAR}:8080 \(ID:1002\) "
        r"Policy denied DROPPED \(TCP Flags: SYN\)",
        rf"empire/tiefighter:5353 \(ID:1003\) -> {DEATHSTAR}:53 \(ID:1002\) "
        r"policy-verdict:L3-L4 INGRESS ALLOWED \(UDP\)",
    ]
    assert len(lines) == 4, lines
    for line, pattern in zip(lines, expected, strict=True):
        assert re.fullmatch(rf"{TIME}: {pattern}", line), line


def test_observe_filters(hubble: Path, fed: h.RunningObserver) -> None:
    def ports(*flags: str) -> list[int]:
        out = run(hubble, fed, "observe", "-o", "jsonpb", *flags)
        flows = [json.loads(line)["flow"] for line in out.splitlines()]
        l4 = [f["l4"].get("TCP") or f["l4"].get("UDP") for f in flows]
        return [p["source_port"] for p in l4]

    assert ports("--verdict", "DROPPED") == [41001]
    assert ports("--from-pod", "default/xwing") == [41000, 41001]
    assert ports("--pod", "default/xwing") == [41000, 80, 41001]
    assert ports("--namespace", "empire", "--protocol", "udp") == [5353]
    assert ports("--to-port", "80") == [41000]
    assert ports("--label", "app=tiefighter") == [5353]
    assert ports("--from-label", "k8s:org=empire") == [80, 5353]
    assert ports("--ip", "fd00::3") == [5353]
    assert ports("--to-ip", "10.0.0.0/24", "--not", "--verdict", "DROPPED") == [41000, 80]
    assert ports("--type", "trace:from-endpoint") == [80]
    assert ports("--type", "drop") == [41001]
    assert ports("--traffic-direction", "egress") == [80]
    assert ports("--identity", "1003") == [5353]
    assert ports("--node-name", h.NODE, "--last", "1") == [5353]
    assert ports("--first", "2") == [41000, 80]
    assert ports("--tcp-flags", "SYN,ACK") == [80]
    assert ports("--ipv6") == [5353]


def source_ports(hubble: Path, observer: h.RunningObserver, *flags: str) -> list[int]:
    """The L4 source port of each flow `hubble observe -o jsonpb FLAGS` prints."""
    out = run(hubble, observer, "observe", "-o", "jsonpb", *flags)
    flows = [json.loads(line)["flow"] for line in out.splitlines()]
    return [(f["l4"].get("TCP") or f["l4"].get("UDP"))["source_port"] for f in flows]


def test_observe_l7_fqdn_trace_and_snat_filters(hubble: Path, fed: h.RunningObserver) -> None:
    # hubble sends source_fqdn/destination_fqdn, http_url, http_header, trace_id,
    # ip_trace_id and source_ip_xlated; Septum evaluates them (these datapath
    # flows carry none of those fields) instead of refusing them.
    def ports(*flags: str) -> list[int]:
        return source_ports(hubble, fed, *flags)

    everything = [41000, 80, 41001, 5353]
    assert ports("--fqdn", "*.cilium.io") == []
    assert ports("--not", "--to-fqdn", "*.cilium.io") == everything
    assert ports("--http-url", "/v1/", "--http-header", "X-Has-Force:true") == []
    assert ports("--trace-id", "4bf92f3577b34da6a3ce929d0e0e4736") == []
    assert ports("--ip-trace-id", "42") == []
    assert ports("--snat-ip", "198.51.100.0/24") == []
    assert ports("--verdict", "DROPPED", "--not", "--snat-ip", "198.51.100.7") == [41001]


def test_observe_cel_expression(hubble: Path, fed: h.RunningObserver) -> None:
    def ports(*flags: str) -> list[int]:
        return source_ports(hubble, fed, *flags)

    assert ports("--cel-expression", "_flow.verdict == Verdict.DROPPED") == [41001]
    udp_or_reply = "has(_flow.l4.UDP) || _flow.is_reply == true"
    assert ports("--cel-expression", udp_or_reply) == [80, 5353]
    assert ports("--not", "--cel-expression", "_flow.l4.TCP.destination_port == uint(80)") == [
        80,
        41001,
        5353,
    ]


def test_observe_bad_fqdn_pattern_is_refused_by_field(hubble: Path, fed: h.RunningObserver) -> None:
    env = {**os.environ, "HOME": str(fed.socket.parent)}
    done = subprocess.run(
        [str(hubble), "observe", "--to-fqdn", "bad name.example", "--server", fed.target],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    assert done.returncode != 0
    assert "InvalidArgument" in done.stderr and "destination_fqdn" in done.stderr, done.stderr


def test_observe_json_fields(hubble: Path, fed: h.RunningObserver) -> None:
    for fmt in ("json", "jsonpb"):
        out = run(hubble, fed, "observe", "-o", fmt, "--verdict", "DROPPED")
        (line,) = out.splitlines()
        resp = json.loads(line)
        flow = resp["flow"]
        assert resp["node_name"] == h.NODE and flow["node_name"] == h.NODE
        assert flow["verdict"] == "DROPPED" and flow["drop_reason_desc"] == "POLICY_DENIED"
        assert flow["source"]["pod_name"] == "xwing" and flow["source"]["identity"] == 1001
        assert flow["destination"]["workloads"] == [{"name": "deathstar", "kind": "Deployment"}]
        assert flow["IP"] == {"source": "10.0.0.1", "destination": "10.0.0.2", "ipVersion": "IPv4"}
        assert flow["ethernet"] == {
            "source": h.SRC_MAC.hex(":"),
            "destination": h.DST_MAC.hex(":"),
        }
        assert flow["l4"]["TCP"]["destination_port"] == 8080
        assert flow["traffic_direction"] == "INGRESS" and flow["is_reply"] is False
        assert flow["event_type"] == {"type": 1, "sub_type": 133}
        assert flow["trace_observation_point"] == "TO_ENDPOINT"


def test_observe_table(hubble: Path, fed: h.RunningObserver) -> None:
    lines = run(hubble, fed, "observe", "-o", "table", "--from-pod", "default/xwing").splitlines()
    assert h.table_cells(lines[0]) == h.TABLE_HEADER
    rows = [h.table_cells(line) for line in lines[1:]]
    assert [row[1:] for row in rows] == [
        [
            "default/xwing:41000",
            f"{DEATHSTAR}:80",
            "policy-verdict:L3-L4 INGRESS",
            "ALLOWED",
            "TCP Flags: SYN",
        ],
        ["default/xwing:41001", f"{DEATHSTAR}:8080", "Policy denied", "DROPPED", "TCP Flags: SYN"],
    ]


def test_observe_follow(hubble: Path, observer: h.RunningObserver) -> None:
    env = {**os.environ, "HOME": str(observer.socket.parent)}
    proc = subprocess.Popen(
        [
            str(hubble),
            "observe",
            "--follow",
            "-o",
            "jsonpb",
            "--server",
            observer.target,
            "--to-port",
            "443",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        # Poll until the follower is connected (the ring gains a listener or a
        # flow fed earlier is delivered), feeding a matching flow each time.
        assert proc.stdout is not None
        observer.push(h.event(src_port=1, dst_port=80))  # filtered out
        deadline = time.monotonic() + 20
        line = ""
        while not line:
            assert time.monotonic() < deadline, "hubble --follow printed nothing"
            observer.push(h.event(src_port=2, dst_port=443))
            ready, _, _ = select.select([proc.stdout], [], [], 0.5)
            if ready:
                line = proc.stdout.readline()
        flow = json.loads(line)["flow"]
        assert flow["l4"]["TCP"]["destination_port"] == 443
    finally:
        proc.terminate()
        proc.communicate(timeout=10)  # reaps the process and closes its pipes


def test_status(hubble: Path, fed: h.RunningObserver) -> None:
    out = run(hubble, fed, "status")
    assert f"Healthcheck (via {fed.target}): Ok" in out
    assert "Current/Max Flows: 4/4,095 (0.10%)" in out


def test_list_nodes(hubble: Path, fed: h.RunningObserver) -> None:
    lines = run(hubble, fed, "list", "nodes").splitlines()
    assert re.split(r"\s{2,}", lines[0].strip())[:2] == ["NAME", "STATUS"]
    assert len(lines) == 2
    row = re.split(r"\s{2,}", lines[1].strip())
    assert row[0] == h.NODE and row[1] == "Connected"
    assert lines[1].replace(" ", "").endswith("4/4095(0.10%)")
