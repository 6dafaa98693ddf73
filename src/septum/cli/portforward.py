"""`septum port-forward`: a local TCP port forwarded to a ready endpoint of a Service.

    septum port-forward [--kubeconfig F] [-n NAMESPACE] svc/NAME [LOCAL:]REMOTE...
                        [--address 127.0.0.1] [--background | --stop]

As ``kubectl port-forward svc/NAME``, REMOTE is a port of the Service (its number or name);
each accepted connection goes to the port it targets on one ready endpoint, taken in turn from
the Service's EndpointSlices. The connection is made from this machine straight to the
endpoint's address, so those addresses must be routable from here: in the lab they are (the
host routes every pod CIDR to its node; the lab kubelet serves no port-forward of its own).
Endpoints are read again when a connection to one fails, and when the last reading is older
than ``ENDPOINTS_MAX_AGE_S``.

``hubble observe`` and ``septum observe`` default to localhost:4245; ``septum port-forward -n
septum-system svc/septum-relay 4245:80 --background`` makes that the relay, as ``cilium hubble
port-forward`` does. ``--background`` detaches the forwarder with a pid file and a log in
``<lab state>/port-forward/`` while a lab is up (``septum lab down`` stops it), else in
/run/septum/port-forward/; ``--stop`` with the same arguments stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import click

ENDPOINTS_MAX_AGE_S: Final = 5.0
CONNECT_TIMEOUT_S: Final = 5.0
API_TIMEOUT_S: Final = 10.0
BACKGROUND_START_TIMEOUT_S: Final = 30.0
COPY_CHUNK: Final = 64 * 1024
RUN_DIR_WITHOUT_LAB: Final = Path("/run/septum/port-forward")

JSON = dict[str, Any]


class PortForwardError(click.ClickException):
    """Every error ``septum port-forward`` reports: one line naming the argument at fault."""


# ---- arguments (pure) ------------------------------------------------------------------------


@dataclass(frozen=True)
class PortSpec:
    """One ``[LOCAL:]REMOTE``: a local port (0: any free one) and a Service port."""

    local: int
    remote: int | str  # the Service port's number, or its name

    def __str__(self) -> str:
        return f"{self.local}:{self.remote}"


def parse_service(ref: str) -> str:
    """The Service name of ``svc/NAME`` (also ``service/NAME``, ``services/NAME``)."""
    kind, sep, name = ref.partition("/")
    if not sep or kind not in ("svc", "service", "services") or not name:
        raise PortForwardError(f"{ref}: expected svc/NAME (only Services are forwarded)")
    return name


def _port_number(text: str, what: str, spec: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise PortForwardError(f"{spec}: {what} port {text!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise PortForwardError(f"{spec}: {what} port {port} is out of range")
    return port


def parse_port_spec(spec: str) -> PortSpec:
    """``8080:80``, ``80`` (the same port locally), ``:80`` (any free local port) or
    ``4245:grpc`` (a Service port by name)."""
    local_text, sep, remote_text = spec.rpartition(":")
    if not remote_text:
        raise PortForwardError(f"{spec}: no remote port (expected [LOCAL:]REMOTE)")
    remote: int | str = remote_text
    if remote_text.isdigit():
        remote = _port_number(remote_text, "remote", spec)
        if remote == 0:
            raise PortForwardError(f"{spec}: remote port 0 is not a port")
    if sep and local_text:
        local = _port_number(local_text, "local", spec)
    elif sep:
        local = 0
    elif isinstance(remote, int):
        local = remote
    else:
        raise PortForwardError(f"{spec}: a named remote port needs a local one (LOCAL:{remote})")
    return PortSpec(local, remote)


# ---- from a Service port to endpoints (pure) -------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    address: str
    port: int

    def __str__(self) -> str:
        return (
            f"[{self.address}]:{self.port}"
            if ":" in self.address
            else f"{self.address}:{self.port}"
        )


def service_port(service: JSON, remote: int | str) -> JSON:
    """The entry of ``service.spec.ports`` that ``remote`` (a number or a name) names."""
    ports = service.get("spec", {}).get("ports") or []
    for port in ports:
        if port.get("protocol", "TCP") != "TCP":
            continue
        if remote == port.get("port") or remote == port.get("name"):
            return dict(port)
    name = service.get("metadata", {}).get("name", "")
    offered = ", ".join(
        f"{p['port']}" + (f" ({p['name']})" if p.get("name") else "")
        for p in ports
        if p.get("protocol", "TCP") == "TCP"
    )
    raise PortForwardError(
        f"svc/{name} has no TCP port {remote!r} (its ports: {offered or 'none'})"
    )


def ready_endpoints(slices: Sequence[JSON], port: JSON) -> list[Endpoint]:
    """Every ready endpoint's address with the port the Service ``port`` targets there.

    EndpointSlice ports carry the Service port's name (or none for an unnamed one) and the
    target port resolved for the endpoints of that slice; ``ready`` unset counts as ready."""
    wanted_name = port.get("name") or ""
    out: list[Endpoint] = []
    for eps in slices:
        if eps.get("addressType", "IPv4") not in ("IPv4", "IPv6"):
            continue
        target = next(
            (
                p.get("port")
                for p in eps.get("ports") or []
                if (p.get("name") or "") == wanted_name and p.get("protocol", "TCP") == "TCP"
            ),
            None,
        )
        if not target:
            continue
        for endpoint in eps.get("endpoints") or []:
            if (endpoint.get("conditions") or {}).get("ready") is False:
                continue
            for address in (endpoint.get("addresses") or [])[:1]:
                out.append(Endpoint(address, int(target)))
    return sorted(set(out), key=lambda e: (e.address, e.port))


# ---- reading the cluster ---------------------------------------------------------------------

# Reads the Service and its EndpointSlices as JSON dicts: (service, slices).
ServiceReader = Callable[[], Awaitable[tuple[JSON, list[JSON]]]]


def kubernetes_reader(kubeconfig: Path | None, namespace: str, name: str) -> ServiceReader:
    """A ServiceReader through the API server that ``kubeconfig`` names."""
    from kubernetes_asyncio.client import ApiClient, CoreV1Api, DiscoveryV1Api
    from kubernetes_asyncio.client.exceptions import ApiException

    from septum.cli.cluster import configuration
    from septum.cli.policyerrors import ClusterError

    settings: Any = None

    async def read() -> tuple[JSON, list[JSON]]:
        nonlocal settings
        if settings is None:
            try:
                settings = await configuration(kubeconfig)
            except ClusterError as err:
                raise PortForwardError(str(err)) from err
        async with ApiClient(settings) as client:
            try:
                service = await CoreV1Api(client).read_namespaced_service(
                    name, namespace, _request_timeout=API_TIMEOUT_S
                )
                slices = await DiscoveryV1Api(client).list_namespaced_endpoint_slice(
                    namespace,
                    label_selector=f"kubernetes.io/service-name={name}",
                    _request_timeout=API_TIMEOUT_S,
                )
            except ApiException as err:
                what = "not found" if err.status == 404 else f"{err.status} {err.reason}"
                raise PortForwardError(
                    f"svc/{name} in namespace {namespace}: the API server answered {what}"
                ) from err
            except (OSError, TimeoutError) as err:
                raise PortForwardError(
                    f"--kubeconfig: cannot reach the API server {settings.host}: {err}"
                ) from err
            as_json = client.sanitize_for_serialization
            return as_json(service), [as_json(s) for s in slices.items]

    return read


# ---- the forwarder ---------------------------------------------------------------------------


class Endpoints:
    """The ready endpoints of one Service port, read again when stale or when one fails."""

    def __init__(
        self,
        read: ServiceReader,
        remote: int | str,
        max_age_s: float = ENDPOINTS_MAX_AGE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read, self._remote = read, remote
        self._max_age_s, self._clock = max_age_s, clock
        self._known: list[Endpoint] = []
        self._read_at: float | None = None
        self._turn = itertools.count()

    async def refresh(self) -> list[Endpoint]:
        service, slices = await self._read()
        self._known = ready_endpoints(slices, service_port(service, self._remote))
        self._read_at = self._clock()
        return self._known

    async def candidates(self) -> list[Endpoint]:
        """The endpoints to try for one connection, starting from the next in turn."""
        if self._read_at is None or self._clock() - self._read_at > self._max_age_s:
            await self.refresh()
        if not self._known:
            return []
        start = next(self._turn) % len(self._known)
        return self._known[start:] + self._known[:start]


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(COPY_CHUNK):
            writer.write(chunk)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.close()


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError, OSError):
        await writer.wait_closed()


Log = Callable[[str], None]


class Forwarder:
    """Accepts on local ports and joins each connection to an endpoint of the Service."""

    def __init__(self, endpoints: Endpoints, log: Log) -> None:
        self.endpoints = endpoints
        self.log = log
        self._handlers: set[asyncio.Task[Any]] = set()
        self._open: set[asyncio.StreamWriter] = set()

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        tried: set[Endpoint] = set()
        failures: list[str] = []
        for fresh in (False, True):
            candidates = await (self.endpoints.refresh() if fresh else self.endpoints.candidates())
            for endpoint in candidates:
                if endpoint in tried:
                    continue
                tried.add(endpoint)
                try:
                    return await asyncio.wait_for(
                        asyncio.open_connection(endpoint.address, endpoint.port),
                        CONNECT_TIMEOUT_S,
                    )
                except (OSError, TimeoutError) as err:
                    failures.append(f"{endpoint}: {err or type(err).__name__}")
        raise ConnectionError("; ".join(failures) or "the Service has no ready endpoint")

    async def handle(
        self, client_reader: asyncio.StreamReader, client: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._open.add(client)
        try:
            await self._forward(client_reader, client)
        finally:
            self._open.discard(client)
            self._handlers.discard(task)

    async def _forward(
        self, client_reader: asyncio.StreamReader, client: asyncio.StreamWriter
    ) -> None:
        local_port = client.get_extra_info("sockname")[1]
        self.log(f"Handling connection for {local_port}")
        try:
            upstream_reader, upstream = await self._connect()
        except (ConnectionError, click.ClickException) as err:
            message = err.format_message() if isinstance(err, click.ClickException) else str(err)
            self.log(f"error forwarding port {local_port}: {message}")
            await _close(client)
            return
        self._open.add(upstream)
        try:
            await asyncio.gather(_pipe(client_reader, upstream), _pipe(upstream_reader, client))
        finally:
            self._open.discard(upstream)
            await _close(upstream)
            await _close(client)

    async def close(self, timeout_s: float = 2.0) -> None:
        """Closes every forwarded connection and waits for their handlers to finish (they
        are not cancelled: Python 3.11's stream server logs a cancelled handler as an error)."""
        for writer in list(self._open):
            writer.close()
        if self._handlers:
            await asyncio.wait(set(self._handlers), timeout=timeout_s)

    async def listen(self, addresses: Sequence[str], spec: PortSpec) -> list[asyncio.Server]:
        """Servers for ``spec`` on every address (one port for all when LOCAL is 0)."""
        servers: list[asyncio.Server] = []
        port = spec.local
        for address in addresses:
            try:
                server = await asyncio.start_server(self.handle, address, port)
            except OSError as err:
                for started in servers:
                    started.close()
                raise PortForwardError(f"{address}:{port}: cannot listen: {err.strerror}") from err
            port = server.sockets[0].getsockname()[1]
            servers.append(server)
            shown = f"[{address}]" if ":" in address else address
            self.log(f"Forwarding from {shown}:{port} -> {spec.remote}")
        return servers


async def serve(
    read: ServiceReader,
    addresses: Sequence[str],
    specs: Sequence[PortSpec],
    log: Log,
    stop: asyncio.Event,
) -> None:
    """Forwards ``specs`` on ``addresses`` until ``stop`` is set."""
    servers: list[asyncio.Server] = []
    forwarders: list[Forwarder] = []
    try:
        for spec in specs:
            endpoints = Endpoints(read, spec.remote)
            # Fails early on a Service or port that does not exist (no endpoint is fine).
            await endpoints.refresh()
            forwarders.append(Forwarder(endpoints, log))
            servers += await forwarders[-1].listen(addresses, spec)
        await stop.wait()
    finally:
        for server in servers:
            server.close()
        for forwarder in forwarders:
            await forwarder.close()
        for server in servers:
            await server.wait_closed()


# ---- background ------------------------------------------------------------------------------


@dataclass(frozen=True)
class BackgroundFiles:
    run_dir: Path
    name: str

    @property
    def pid_file(self) -> Path:
        return self.run_dir / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.run_dir / f"{self.name}.log"


def background_files(namespace: str, service: str, specs: Sequence[PortSpec]) -> BackgroundFiles:
    """Where a background forwarder keeps its pid file and log: the lab's state directory
    while a lab is up (``septum lab down`` stops it), else /run/septum/port-forward."""
    from septum.lab import lab as lab_mod
    from septum.lab.errors import NoLabError

    try:
        run_dir = lab_mod.current().state.port_forwards
    except NoLabError:
        run_dir = RUN_DIR_WITHOUT_LAB
    ports = "_".join(f"{s.local}-{s.remote}" for s in specs)
    return BackgroundFiles(run_dir, f"{namespace}_{service}_{ports}")


def _running(files: BackgroundFiles) -> int | None:
    from septum.lab import procs

    found = [p for p in procs.read(files.run_dir) if p.name == files.name and procs.alive(p)]
    return found[0].pid if found else None


def start_background(argv: Sequence[str], files: BackgroundFiles, expected_lines: int) -> str:
    """Starts ``argv`` (this command without --background) detached; returns its
    "Forwarding from" lines once it listens."""
    from septum.lab import procs

    pid = _running(files)
    if pid is not None:
        raise PortForwardError(
            f"already forwarding in the background (pid {pid}, log {files.log_file}): "
            "stop it with --stop and the same arguments"
        )
    files.log_file.unlink(missing_ok=True)
    proc = procs.spawn(files.run_dir, files.run_dir, files.name, argv)
    deadline = time.monotonic() + BACKGROUND_START_TIMEOUT_S
    while time.monotonic() < deadline:
        text = files.log_file.read_text() if files.log_file.exists() else ""
        forwarding = [line for line in text.splitlines() if line.startswith("Forwarding from")]
        if len(forwarding) >= expected_lines:
            return "\n".join(forwarding)
        if not procs.alive(proc):
            last = text.strip().splitlines()
            stop_background(files)
            raise PortForwardError(last[-1] if last else "the forwarder exited at once")
        time.sleep(0.05)
    stop_background(files)
    raise PortForwardError(f"not listening after {BACKGROUND_START_TIMEOUT_S:.0f}s")


def stop_background(files: BackgroundFiles) -> int | None:
    """Stops the background forwarder ``files`` name and removes its files; its pid, or None
    if none was running."""
    from septum.lab import procs

    pid = _running(files)
    procs.stop([p for p in procs.read(files.run_dir) if p.name == files.name])
    for path in (files.pid_file, files.log_file, files.run_dir / f"{files.name}.argv"):
        path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        files.run_dir.rmdir()  # the last one out
    return pid


# ---- the command -----------------------------------------------------------------------------


def default_kubeconfig() -> Path | None:
    """$KUBECONFIG or ~/.kube/config when either is there (None lets the client find it);
    else the admin kubeconfig of a lab that is up."""
    if os.environ.get("KUBECONFIG") or (Path.home() / ".kube" / "config").exists():
        return None
    from septum.lab import lab as lab_mod
    from septum.lab.errors import NoLabError

    with contextlib.suppress(NoLabError):
        return lab_mod.current().kubeconfig
    return None


def _run(read: ServiceReader, addresses: Sequence[str], specs: Sequence[PortSpec]) -> None:
    def log(line: str) -> None:
        click.echo(line)
        sys.stdout.flush()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(read, addresses, specs, log, stop)

    asyncio.run(main())


def _forward_argv(
    kubeconfig: Path | None, namespace: str, service_ref: str, ports: Sequence[str], address: str
) -> list[str]:
    argv = [sys.executable, "-m", "septum.cli.portforward", "-n", namespace, "--address", address]
    if kubeconfig is not None:
        argv += ["--kubeconfig", str(kubeconfig.resolve())]
    return [*argv, service_ref, *ports]


def _addresses(address: str) -> list[str]:
    found = [a.strip() for a in address.split(",") if a.strip()]
    if not found:
        raise PortForwardError(f"--address {address!r}: no address")
    return ["127.0.0.1", "::1"] if found == ["localhost"] else found


@click.command("port-forward")
@click.option(
    "--kubeconfig",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Kubeconfig (default: $KUBECONFIG, ~/.kube/config, else the lab's when one is up).",
)
@click.option("-n", "--namespace", default="default", show_default=True)
@click.option(
    "--address",
    default="127.0.0.1",
    show_default=True,
    help="Local addresses to listen on, comma-separated (localhost: 127.0.0.1 and ::1).",
)
@click.option(
    "--background",
    is_flag=True,
    help="Detach, with a pid file and log in the lab's state dir (or /run/septum).",
)
@click.option("--stop", is_flag=True, help="Stop the background forwarder of these arguments.")
@click.argument("service_ref", metavar="svc/NAME")
@click.argument("ports", metavar="[LOCAL:]REMOTE...", nargs=-1, required=True)
def port_forward(
    kubeconfig: Path | None,
    namespace: str,
    address: str,
    background: bool,
    stop: bool,
    service_ref: str,
    ports: tuple[str, ...],
) -> None:
    """Forward local ports to a Service's ready endpoints, as kubectl port-forward svc/NAME."""
    name = parse_service(service_ref)
    specs = [parse_port_spec(p) for p in ports]
    addresses = _addresses(address)
    if background and stop:
        raise click.UsageError("--background and --stop exclude each other")
    if kubeconfig is None:
        kubeconfig = default_kubeconfig()
    if stop:
        files = background_files(namespace, name, specs)
        pid = stop_background(files)
        click.echo(f"stopped (pid {pid})" if pid else "no such forwarder was running", err=True)
        return
    if background:
        files = background_files(namespace, name, specs)
        argv = _forward_argv(kubeconfig, namespace, service_ref, ports, address)
        click.echo(start_background(argv, files, len(specs) * len(addresses)))
        click.echo(f"in the background: pid file {files.pid_file}, log {files.log_file}", err=True)
        return
    _run(kubernetes_reader(kubeconfig, namespace, name), addresses, specs)


if __name__ == "__main__":
    port_forward()
