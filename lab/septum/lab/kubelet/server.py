"""The kubelet's HTTPS API, the part kubectl users reach through the API server.

``/containerLogs`` (``kubectl logs`` with ``-f``, ``--previous``, ``--tail``) and ``/exec``
over WebSocket (channel protocol v4/v5): the Node declares ExtendWebSocketsToKubelet, so the
API server proxies kubectl's WebSocket straight here instead of translating it to SPDY. Clients
that speak SPDY themselves get SPDY/3.1 (``spdy``), which the API server passes through as is.
Only clients with a certificate from the lab CA (the API server) are accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import pty
import signal
import ssl
import struct
import termios
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import WSMsgType, web

from septum.lab.kubelet import spdy

if TYPE_CHECKING:
    from septum.lab.kubelet.node import Kubelet

log = logging.getLogger("septum.lab.kubelet")
WS_PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255


def make_app(kubelet: Kubelet) -> web.Application:
    app = web.Application()

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def container_logs(request: web.Request) -> web.StreamResponse:
        ns, pod, container = (request.match_info[k] for k in ("ns", "pod", "container"))
        worker = kubelet.find(ns, pod)
        if worker is None:
            raise web.HTTPNotFound(text=f'pod "{pod}" not found on {kubelet.node.name}')
        c = next(
            (c for c in worker.containers + worker.init_containers if c.name == container), None
        )
        if c is None:
            raise web.HTTPNotFound(text=f'container "{container}" not found in pod "{pod}"')
        previous = request.query.get("previous") == "true"
        follow = request.query.get("follow") == "true" and not previous
        run = c.restart_count - 1 if previous else c.restart_count
        path = c.log_path(run)
        if not previous and not path.exists() and run > 0:
            # Waiting to restart: like kubelets, show the last terminated run.
            run -= 1
            path = c.log_path(run)
        if run < 0 or not path.exists():
            what = "previous terminated container" if previous else "container"
            raise web.HTTPBadRequest(text=f'{what} "{container}" in pod "{pod}" not found')
        data = path.read_bytes()
        tail = request.query.get("tailLines")
        if tail is not None and tail.lstrip("-").isdigit() and int(tail) >= 0:
            lines = data.splitlines(keepends=True)
            data = b"".join(lines[len(lines) - int(tail) :]) if int(tail) else b""
        limit = request.query.get("limitBytes")
        if limit and limit.isdigit():
            data = data[: int(limit)]
        resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await resp.prepare(request)
        await resp.write(data)
        if follow:
            await _follow(
                resp,
                path,
                path.stat().st_size,
                lambda: c.restart_count != run or "running" not in c.state,
            )
        await resp.write_eof()
        return resp

    async def exec_handler(request: web.Request) -> web.StreamResponse:
        ns, pod, container = (request.match_info[k] for k in ("ns", "pod", "container"))
        worker = kubelet.find(ns, pod)
        if worker is None:
            raise web.HTTPNotFound(text=f'pod "{pod}" not found on {kubelet.node.name}')
        c = next((c for c in worker.containers if c.name == container), None)
        if c is None or c.proc is None or c.proc.returncode is not None:
            raise web.HTTPBadRequest(text=f'container "{container}" is not running')
        command = request.query.getall("command", [])
        if not command:
            raise web.HTTPBadRequest(text="no command given")
        if spdy.is_spdy_upgrade(request):
            return await spdy.serve_exec(request, worker.exec_argv(c, command))
        ws = web.WebSocketResponse(protocols=WS_PROTOCOLS)
        if not ws.can_prepare(request).ok:
            raise web.HTTPBadRequest(
                text="exec needs a WebSocket (v4/v5.channel.k8s.io) or SPDY/3.1 upgrade"
            )
        await ws.prepare(request)
        log.info("exec %s/%s/%s %s", ns, pod, container, dict(request.query))
        if request.query.get("tty") in ("1", "true"):
            await _run_exec_tty(ws, worker.exec_argv(c, command))
            return ws
        await _run_exec(
            ws, worker.exec_argv(c, command), request.query.get("input") in ("1", "true")
        )
        return ws

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/containerLogs/{ns}/{pod}/{container}", container_logs)
    app.router.add_route("*", "/exec/{ns}/{pod}/{container}", exec_handler)
    return app


async def _follow(resp: web.StreamResponse, path: Path, offset: int, finished: object) -> None:
    assert callable(finished)
    while True:
        size = path.stat().st_size if path.exists() else offset
        if size > offset:
            with open(path, "rb") as f:
                f.seek(offset)
                chunk = f.read(size - offset)
            offset = size
            await resp.write(chunk)
            continue
        if finished():
            return
        await asyncio.sleep(0.2)


async def _run_exec(ws: web.WebSocketResponse, argv: list[str], want_stdin: bool) -> None:
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE if want_stdin else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
    except OSError as err:
        await ws.send_bytes(
            bytes([ERROR])
            + json.dumps({"metadata": {}, "status": "Failure", "message": str(err)}).encode()
        )
        await ws.close()
        return

    async def pump(stream: asyncio.StreamReader | None, channel: int) -> None:
        assert stream is not None
        while chunk := await stream.read(32768):
            await ws.send_bytes(bytes([channel]) + chunk)

    async def read_stdin() -> None:
        async for msg in ws:
            if msg.type != WSMsgType.BINARY or not msg.data:
                continue
            channel, payload = msg.data[0], msg.data[1:]
            if channel == STDIN and proc.stdin is not None:
                if payload:
                    proc.stdin.write(payload)
                    await proc.stdin.drain()
            elif channel == CLOSE and payload and payload[0] == STDIN and proc.stdin:
                proc.stdin.close()
        # The client went away: stop the command.
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

    reader = asyncio.create_task(read_stdin())
    await asyncio.gather(pump(proc.stdout, STDOUT), pump(proc.stderr, STDERR))
    code = await proc.wait()
    await _finish(ws, code, reader)


async def _run_exec_tty(ws: web.WebSocketResponse, argv: list[str]) -> None:
    """``kubectl exec -t``: the command gets a pseudo-terminal; output is all on stdout."""
    master, slave = pty.openpty()

    def controlling_tty() -> None:  # runs in the child, after setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            start_new_session=True,
            preexec_fn=controlling_tty,
        )
    except OSError as err:
        os.close(master)
        await _finish(ws, 127, None, str(err))
        return
    finally:
        os.close(slave)
    loop = asyncio.get_running_loop()
    output: asyncio.Queue[bytes] = asyncio.Queue()

    def readable() -> None:
        try:
            data = os.read(master, 32768)
        except OSError:  # EIO once the last process holding the terminal is gone
            data = b""
        if not data:
            loop.remove_reader(master)
        output.put_nowait(data)

    loop.add_reader(master, readable)

    async def read_stdin() -> None:
        async for msg in ws:
            if msg.type != WSMsgType.BINARY or not msg.data:
                continue
            channel, payload = msg.data[0], msg.data[1:]
            if channel == STDIN and payload:
                os.write(master, payload)
            elif channel == RESIZE:
                with contextlib.suppress(ValueError, KeyError, OSError):
                    size = json.loads(payload)
                    fcntl.ioctl(
                        master,
                        termios.TIOCSWINSZ,
                        struct.pack("HHHH", size["Height"], size["Width"], 0, 0),
                    )
            elif channel == CLOSE and payload and payload[0] == STDIN:
                os.write(master, b"\x04")
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

    reader = asyncio.create_task(read_stdin())
    while data := await output.get():
        await ws.send_bytes(bytes([STDOUT]) + data)
    code = await proc.wait()
    loop.remove_reader(master)
    os.close(master)
    await _finish(ws, code, reader)


async def _finish(
    ws: web.WebSocketResponse, code: int, reader: asyncio.Task[None] | None, message: str = ""
) -> None:
    """Sends the exit status on the error channel (as the kubelet does) and closes."""
    if code == 0:
        status = {"metadata": {}, "status": "Success"}
    else:
        status = {
            "metadata": {},
            "status": "Failure",
            "message": message or f"command terminated with non-zero exit code: {code}",
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
        }
    with contextlib.suppress(ConnectionError, RuntimeError):
        await ws.send_bytes(bytes([ERROR]) + json.dumps(status).encode())
        await ws.close()
    if reader is not None:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader


def ssl_context(pki: Path, node_name: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki / "ca.crt"))
    ctx.load_cert_chain(
        str(pki / f"{node_name}-serving.crt"), str(pki / f"{node_name}-serving.key")
    )
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx
