"""/healthz and /readyz over HTTP, on a TCP port or a unix socket.

Live: the agent's loop answers.  Ready: the datapath is loaded, the first sync from the
API server is done and written, and the CNI socket is listening.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from pathlib import Path

Check = Callable[[], tuple[bool, dict[str, object]]]


def _response(status: int, body: dict[str, object]) -> bytes:
    reason = {200: "OK", 404: "Not Found"}.get(status, "Service Unavailable")
    payload = json.dumps(body).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + payload


class HealthServer:
    def __init__(
        self, ready: Check, port: int | None = None, socket_path: Path | None = None
    ) -> None:
        self._ready = ready
        self.port = port
        self.socket_path = socket_path
        self._servers: list[asyncio.base_events.Server] = []

    async def start(self) -> None:
        if self.port is not None:
            server = await asyncio.start_server(self._serve, host="0.0.0.0", port=self.port)
            self.port = server.sockets[0].getsockname()[1]
            self._servers.append(server)
        if self.socket_path is not None:
            self.socket_path.parent.mkdir(parents=True, exist_ok=True)
            self.socket_path.unlink(missing_ok=True)
            self._servers.append(
                await asyncio.start_unix_server(self._serve, path=str(self.socket_path))
            )

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
            with contextlib.suppress(Exception):
                await server.wait_closed()
        if self.socket_path is not None:
            self.socket_path.unlink(missing_ok=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), 5)
            parts = request.decode(errors="replace").split()
            path = parts[1] if len(parts) > 1 else "/"
            if path.startswith("/healthz"):
                writer.write(_response(200, {"status": "ok"}))
            elif path.startswith("/readyz"):
                ok, details = self._ready()
                writer.write(_response(200 if ok else 503, {"ready": ok, **details}))
            else:
                writer.write(_response(404, {"error": "not found"}))
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
