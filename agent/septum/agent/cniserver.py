"""The agent's end of the CNI plugin: a unix-socket server answering ADD and DEL.

One JSON request per connection (see septum.agent.cni), one JSON answer:
``{"ok": true}`` or ``{"ok": false, "error": "..."}``.  The handlers run on the agent's
event loop, so they see and change the same state as the watch loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Final

log = logging.getLogger(__name__)

Handler = Callable[[Mapping[str, Any]], Awaitable[None]]
MAX_REQUEST_BYTES: Final = 1 << 20


class CniServer:
    def __init__(self, path: Path, on_add: Handler, on_del: Handler) -> None:
        self.path = path
        self._handlers = {"ADD": on_add, "DEL": on_del}
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.unlink(missing_ok=True)  # a stale socket of an earlier agent
        self._server = await asyncio.start_unix_server(
            self._serve, path=str(self.path), limit=MAX_REQUEST_BYTES
        )
        self.path.chmod(0o600)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
        self.path.unlink(missing_ok=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await reader.readline()
            answer = await self._answer(line)
            writer.write(json.dumps(answer).encode())
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError) as err:
            log.info("CNI connection: %s", err)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _answer(self, line: bytes) -> dict[str, Any]:
        try:
            request = json.loads(line)
        except ValueError as err:
            return {"ok": False, "error": f"bad request: {err}"}
        handler = self._handlers.get(str(request.get("command")))
        if handler is None:
            return {"ok": True}
        try:
            await handler(request)
        except Exception as err:  # noqa: BLE001 - the plugin reports it to the runtime
            return {"ok": False, "error": str(err)}
        return {"ok": True}
