"""`septum port-forward` without a cluster: arguments, Service ports to endpoints, and the
forwarder against local servers. tests/cli/test_portforward_lab.py forwards to a lab Service."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]  # no stubs pinned
import pytest
from click.testing import CliRunner

from septum.cli.main import cli
from septum.cli.portforward import (
    BackgroundFiles,
    Endpoint,
    Endpoints,
    Forwarder,
    PortForwardError,
    PortSpec,
    parse_port_spec,
    parse_service,
    ready_endpoints,
    serve,
    service_port,
    start_background,
    stop_background,
)

JSON = dict[str, Any]

SERVICE: JSON = {
    "metadata": {"name": "septum-relay", "namespace": "septum-system"},
    "spec": {
        "ports": [
            {"name": "grpc", "port": 80, "targetPort": "grpc", "protocol": "TCP"},
            {"name": "dns", "port": 53, "protocol": "UDP"},
            {"name": "metrics", "port": 9965, "targetPort": 9965, "protocol": "TCP"},
        ]
    },
}


def eps(ports: list[JSON], *endpoints: JSON, address_type: str = "IPv4") -> JSON:
    return {"addressType": address_type, "ports": ports, "endpoints": list(endpoints)}


def endpoint(address: str, ready: bool | None = True) -> JSON:
    conditions = {} if ready is None else {"ready": ready}
    return {"addresses": [address], "conditions": conditions}


# ---- arguments -------------------------------------------------------------------------------


@pytest.mark.parametrize("ref", ["svc/relay", "service/relay", "services/relay"])
def test_service_refs(ref: str) -> None:
    assert parse_service(ref) == "relay"


@pytest.mark.parametrize("ref", ["pod/relay", "relay", "svc/", "deploy/relay"])
def test_other_refs_are_refused_naming_the_argument(ref: str) -> None:
    with pytest.raises(PortForwardError, match=rf"^{ref}: expected svc/NAME"):
        parse_service(ref)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("4245:80", PortSpec(4245, 80)),
        ("80", PortSpec(80, 80)),
        (":80", PortSpec(0, 80)),
        ("4245:grpc", PortSpec(4245, "grpc")),
        ("0:80", PortSpec(0, 80)),
    ],
)
def test_port_specs(spec: str, expected: PortSpec) -> None:
    assert parse_port_spec(spec) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("grpc", "grpc: a named remote port needs a local one (LOCAL:grpc)"),
        ("70000:80", "70000:80: local port 70000 is out of range"),
        ("x:80", "x:80: local port 'x' is not a number"),
        ("4245:", "4245:: no remote port"),
        ("4245:0", "4245:0: remote port 0 is not a port"),
    ],
)
def test_bad_port_specs(spec: str, message: str) -> None:
    with pytest.raises(PortForwardError) as err:
        parse_port_spec(spec)
    assert err.value.format_message().startswith(message)


def test_cli_errors_name_the_argument() -> None:
    out = CliRunner().invoke(cli, ["port-forward", "pod/relay", "80"])
    assert out.exit_code == 1
    assert "pod/relay: expected svc/NAME" in out.output
    out = CliRunner().invoke(cli, ["port-forward", "svc/relay", "80", "--background", "--stop"])
    assert out.exit_code == 2
    assert "--background and --stop exclude each other" in out.output


# ---- Service ports to endpoints --------------------------------------------------------------


def test_service_port_by_number_or_name_tcp_only() -> None:
    assert service_port(SERVICE, 80)["name"] == "grpc"
    assert service_port(SERVICE, "metrics")["port"] == 9965
    with pytest.raises(PortForwardError) as err:
        service_port(SERVICE, 53)
    assert err.value.format_message() == (
        "svc/septum-relay has no TCP port 53 (its ports: 80 (grpc), 9965 (metrics))"
    )


def test_ready_endpoints_take_the_target_port_of_the_slice_port_with_the_same_name() -> None:
    grpc = {"name": "grpc", "port": 4245, "protocol": "TCP"}
    metrics = {"name": "metrics", "port": 9965, "protocol": "TCP"}
    slices = [
        eps([grpc, metrics], endpoint("10.214.1.5"), endpoint("10.214.2.9", ready=False)),
        eps([grpc], endpoint("10.214.2.7", ready=None)),  # ready unset counts as ready
        eps([grpc], endpoint("fd00::7"), address_type="FQDN"),
        eps([], endpoint("10.214.1.99")),  # a slice without ports has no endpoint for it
    ]
    assert ready_endpoints(slices, service_port(SERVICE, 80)) == [
        Endpoint("10.214.1.5", 4245),
        Endpoint("10.214.2.7", 4245),
    ]
    assert ready_endpoints(slices, service_port(SERVICE, 9965)) == [Endpoint("10.214.1.5", 9965)]


def test_an_unnamed_service_port_matches_the_unnamed_slice_port() -> None:
    service = {"metadata": {"name": "web"}, "spec": {"ports": [{"port": 80, "targetPort": 8080}]}}
    slices = [eps([{"port": 8080, "protocol": "TCP"}], endpoint("10.214.1.5"))]
    assert ready_endpoints(slices, service_port(service, 80)) == [Endpoint("10.214.1.5", 8080)]


# ---- the forwarder ---------------------------------------------------------------------------


class FakeCluster:
    """Serves the Service and slices listing ``self.addresses`` (ports from ``self.ports``)."""

    def __init__(self) -> None:
        self.endpoints: list[tuple[str, int]] = []
        self.reads = 0

    async def read(self) -> tuple[JSON, list[JSON]]:
        self.reads += 1
        service = {"metadata": {"name": "web"}, "spec": {"ports": [{"port": 80}]}}
        slices = [
            eps([{"port": port, "protocol": "TCP"}], endpoint(address))
            for address, port in self.endpoints
        ]
        return service, slices


@pytest.fixture()
async def answering() -> AsyncIterator[list[int]]:
    """Two local servers that answer each line with their name; yields their ports."""
    servers = []
    for name in (b"one", b"two"):

        async def answer(
            r: asyncio.StreamReader, w: asyncio.StreamWriter, me: bytes = name
        ) -> None:
            line = await r.readline()
            w.write(me + b" " + line)
            await w.drain()
            w.close()

        servers.append(await asyncio.start_server(answer, "127.0.0.1", 0))
    yield [s.sockets[0].getsockname()[1] for s in servers]
    for s in servers:
        s.close()
        await s.wait_closed()


def _dead_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again: connecting is refused


async def _ask(port: int, line: bytes = b"hello\n") -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(line)
    await writer.drain()
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()
    return answer


@pytest.fixture()
def logged() -> Iterator[list[str]]:
    yield []


async def test_connections_take_the_endpoints_in_turn(
    answering: list[int], logged: list[str]
) -> None:
    cluster = FakeCluster()
    cluster.endpoints = [("127.0.0.1", answering[0]), ("127.0.0.1", answering[1])]
    stop = asyncio.Event()
    task = asyncio.create_task(
        serve(cluster.read, ["127.0.0.1"], [PortSpec(0, 80)], logged.append, stop)
    )
    try:
        while not logged:
            await asyncio.sleep(0.01)
        assert logged[0].startswith("Forwarding from 127.0.0.1:")
        assert logged[0].endswith(" -> 80")
        local = int(logged[0].split(":")[1].split()[0])
        answers = {await _ask(local) for _ in range(4)}
        assert answers == {b"one hello\n", b"two hello\n"}
        assert f"Handling connection for {local}" in logged
    finally:
        stop.set()
        await task


async def test_a_failed_endpoint_makes_the_forwarder_read_the_endpoints_again(
    answering: list[int], logged: list[str]
) -> None:
    cluster = FakeCluster()
    cluster.endpoints = [("127.0.0.1", _dead_port())]  # the pod that was there is gone
    endpoints = Endpoints(cluster.read, 80, max_age_s=3600)
    await endpoints.refresh()
    forwarder = Forwarder(endpoints, logged.append)
    [server] = await forwarder.listen(["127.0.0.1"], PortSpec(0, 80))
    local = server.sockets[0].getsockname()[1]
    try:
        cluster.endpoints = [("127.0.0.1", answering[1])]  # its replacement
        assert await _ask(local) == b"two hello\n"
        assert cluster.reads == 2
        cluster.endpoints = []
        await endpoints.refresh()
        assert await _ask(local, b"") == b""  # no endpoint: the connection is closed
        assert any("the Service has no ready endpoint" in line for line in logged)
    finally:
        server.close()
        await forwarder.close()
        await server.wait_closed()


async def test_endpoints_are_read_again_once_stale() -> None:
    cluster = FakeCluster()
    cluster.endpoints = [("127.0.0.1", 1)]
    now = [0.0]
    endpoints = Endpoints(cluster.read, 80, max_age_s=5, clock=lambda: now[0])
    assert await endpoints.candidates() == [Endpoint("127.0.0.1", 1)]
    now[0] = 4.0
    await endpoints.candidates()
    assert cluster.reads == 1
    now[0] = 5.5
    await endpoints.candidates()
    assert cluster.reads == 2


async def test_a_port_in_use_is_an_error_naming_it(logged: list[str]) -> None:
    blocker = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = blocker.sockets[0].getsockname()[1]
    try:
        endpoints = Endpoints(FakeCluster().read, 80)
        with pytest.raises(PortForwardError, match=rf"^127\.0\.0\.1:{port}: cannot listen"):
            await Forwarder(endpoints, logged.append).listen(["127.0.0.1"], PortSpec(port, 80))
    finally:
        blocker.close()
        await blocker.wait_closed()


# ---- background ------------------------------------------------------------------------------


def test_background_waits_for_the_forwarding_lines_and_stop_removes_its_files(
    tmp_path: Path,
) -> None:
    files = BackgroundFiles(tmp_path / "port-forward", "ns_web_0-80")
    listening = "print('Forwarding from 127.0.0.1:40123 -> 80', flush=True); time.sleep(60)"
    argv = [sys.executable, "-c", f"import time; {listening}"]
    try:
        assert start_background(argv, files, 1) == "Forwarding from 127.0.0.1:40123 -> 80"
        with pytest.raises(PortForwardError, match=r"^already forwarding in the background"):
            start_background(argv, files, 1)
    finally:
        pid = stop_background(files)
    assert pid is not None and (not psutil.pid_exists(pid) or _zombie(pid))
    assert not files.run_dir.exists()
    assert stop_background(files) is None


def test_background_reports_the_forwarders_last_line_when_it_fails(tmp_path: Path) -> None:
    files = BackgroundFiles(tmp_path / "port-forward", "ns_web_0-80")
    argv = [sys.executable, "-c", "print('Error: svc/web in namespace ns: not found')"]
    with pytest.raises(PortForwardError) as err:
        start_background(argv, files, 1)
    assert err.value.format_message() == "Error: svc/web in namespace ns: not found"
    assert not files.run_dir.exists()


def _zombie(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True
