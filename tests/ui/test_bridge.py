"""The gRPC-Web framing and `septum ui`'s bridge over real HTTP to a real relay."""

from __future__ import annotations

import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from septum.dataplane.observe.api.observer import observer_pb2
from septum.dataplane.observe.server import TLSFiles
from septum.ui import grpcweb
from septum.ui.api.v1 import policy_pb2
from septum.ui.errors import FramingError
from tests.relay.conftest import Agents, Certificates, boot_ns, flow_event
from tests.ui.conftest import TIEFIGHTER, Backend, landing
from tests.ui.test_policy_view import CANDIDATE, REPO


def test_frames_round_trip_and_trailers() -> None:
    body = grpcweb.message_frame(b"abc") + grpcweb.message_frame(b"")
    assert [f.payload for f in grpcweb.parse_frames(body)] == [b"abc", b""]
    trailer = grpcweb.parse_frames(grpcweb.trailer_frame(3, "bad 100% ü"))[0]
    assert trailer.trailer
    assert trailer.payload == b"grpc-status:3\r\ngrpc-message:bad 100%25 %C3%BC\r\n"
    assert grpcweb.parse_timeout("250m") == 0.25
    assert grpcweb.parse_timeout("10S") == 10
    assert grpcweb.parse_timeout("x") is None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"\x00\x00\x00", "truncated frame header at byte 0"),
        (b"\x00\x00\x00\x00\x09abc", "claims 9 bytes"),
        (b"\x01\x00\x00\x00\x00", "compressed frame"),
        (b"", "expected one request message, got 0"),
    ],
)
def test_malformed_bodies_are_refused(body: bytes, message: str) -> None:
    with pytest.raises(FramingError, match=message):
        grpcweb.single_message(body)


def _call(url: str, path: str, body: bytes, ctype: str = "application/grpc-web+proto") -> bytes:
    req = urllib.request.Request(
        url + path, data=body, headers={"Content-Type": ctype}, method="POST"
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.headers["Content-Type"] == "application/grpc-web+proto"
        return bytes(resp.read())


def test_bridge_forwards_getflows_and_refuses_what_it_does_not_serve(
    backend: Backend, start_ui: Any
) -> None:
    backend.push(landing(TIEFIGHTER, 44000, allowed=True))
    ui = start_ui(backend.relay_address)
    request = observer_pb2.GetFlowsRequest(number=10).SerializeToString()
    frames = grpcweb.parse_frames(
        _call(ui.url, "/observer.Observer/GetFlows", grpcweb.message_frame(request))
    )
    flows = [observer_pb2.GetFlowsResponse.FromString(f.payload) for f in frames if not f.trailer]
    assert any(r.flow.source.pod_name == "tiefighter" for r in flows)
    assert frames[-1].trailer and frames[-1].payload.startswith(b"grpc-status:0")

    # The relay's own errors come back as gRPC statuses (a bad filter: INVALID_ARGUMENT=3).
    bad = observer_pb2.GetFlowsRequest(number=1)
    bad.whitelist.add().source_ip.append("not-an-ip")
    last = grpcweb.parse_frames(
        _call(ui.url, "/observer.Observer/GetFlows", grpcweb.message_frame(bad.SerializeToString()))
    )[-1]
    assert last.payload.startswith(b"grpc-status:3"), last.payload

    unknown = grpcweb.parse_frames(_call(ui.url, "/peer.Peer/Notify", grpcweb.message_frame(b"")))[
        -1
    ]
    assert unknown.payload.startswith(b"grpc-status:12"), unknown.payload  # UNIMPLEMENTED
    wrong = grpcweb.parse_frames(
        _call(ui.url, "/observer.Observer/GetFlows", b"{}", ctype="application/json")
    )[-1]
    assert b"grpc-status:3" in wrong.payload and b"Content-Type" in wrong.payload

    # The page itself, and its client-side routes.
    for path in ("/", "/flows"):
        with urllib.request.urlopen(ui.url + path, timeout=10) as resp:
            assert b'<div id="root">' in resp.read()


def _septum_ui(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).parent / "septum"), "ui", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_bad_flags_are_named(tmp_path: Path) -> None:
    out = _septum_ui("--assets", str(tmp_path))
    assert out.returncode == 2 and "--assets: no built UI (index.html)" in out.stderr
    out = _septum_ui("--server", "unix:///tmp/x.sock", "--tls")
    assert out.returncode == 2 and "--tls: TLS is for TCP servers" in out.stderr
    out = _septum_ui("--port", "0")
    assert out.returncode == 2 and "--port" in out.stderr
    missing = tmp_path / "ca.pem"
    out = _septum_ui("--tls-client-cert-file", "/etc/hostname")
    assert out.returncode == 2 and "--tls-client-cert-file: needs --tls-client-key-file" in (
        out.stderr
    )
    assert not missing.exists()


def test_unreachable_upstream_is_a_status_not_a_hang(start_ui: Any) -> None:
    ui = start_ui("127.0.0.1:1")
    request = observer_pb2.ServerStatusRequest().SerializeToString()
    req = urllib.request.Request(
        ui.url + "/observer.Observer/ServerStatus",
        data=grpcweb.message_frame(request),
        headers={"Content-Type": "application/grpc-web+proto", "grpc-timeout": "2S"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:
            last = grpcweb.parse_frames(resp.read())[-1]
    except urllib.error.URLError as err:  # pragma: no cover - reported below
        raise AssertionError(f"the bridge failed instead of answering: {err}") from err
    assert last.trailer
    assert last.payload.split(b"\r\n")[0] in (b"grpc-status:14", b"grpc-status:4")


def test_tls_to_the_observer_as_septum_observe_dials_it(
    start_ui: Any, certificates: Certificates, agents: Agents
) -> None:
    """--server tls://... with --tls-ca-cert-files: the bridge verifies the server; a CA the
    server's certificate does not chain to gives UNAVAILABLE, not flows."""
    agent = agents.start("ui-tls", tls=TLSFiles(certificates.agent_cert, certificates.agent_key))
    agent.push(flow_event(boot_ns(), 7100))
    request = grpcweb.message_frame(observer_pb2.GetFlowsRequest(number=5).SerializeToString())
    trusted = start_ui(
        f"tls://{agent.address}",
        "--tls-ca-cert-files",
        str(certificates.ca),
        "--tls-server-name",
        "localhost",
        "-f",
        str(REPO / "examples/starwars/policy-l3-l4.yaml"),
    )
    frames = grpcweb.parse_frames(_call(trusted.url, "/observer.Observer/GetFlows", request))
    flows = [observer_pb2.GetFlowsResponse.FromString(f.payload) for f in frames if not f.trailer]
    assert [r.flow.l4.TCP.source_port for r in flows] == [7100]
    # The Policy view's what-if replays the same Observer's flows, dialled with the same CA
    # and server name (system CAs would not verify this server).
    whatif = policy_pb2.WhatIfRequest(manifests=CANDIDATE, since="1h").SerializeToString()
    frames = grpcweb.parse_frames(
        _call(trusted.url, "/septum.ui.v1.PolicyService/WhatIf", grpcweb.message_frame(whatif))
    )
    assert frames[-1].payload.split(b"\r\n")[0] == b"grpc-status:0", frames[-1].payload
    answer = policy_pb2.WhatIfResponse.FromString(frames[0].payload)
    assert answer.flows == 1 and not [n for n in answer.notes if "skipped" in n], answer
    untrusted = start_ui(
        f"tls://{agent.address}",
        "--tls-ca-cert-files",
        str(certificates.other_ca),
        "--tls-server-name",
        "localhost",
    )
    req = urllib.request.Request(
        untrusted.url + "/observer.Observer/GetFlows",
        data=request,
        headers={"Content-Type": "application/grpc-web+proto", "grpc-timeout": "3S"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=15) as resp:
        last = grpcweb.parse_frames(resp.read())[-1]
    assert last.payload.split(b"\r\n")[0] in (b"grpc-status:14", b"grpc-status:4"), last.payload
