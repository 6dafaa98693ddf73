"""Forwards the browser's gRPC-Web calls to the Observer API over real gRPC.

Messages pass through as bytes: the bridge never decodes a flow, so whatever the relay sends
(every Hubble field, present and future) reaches the browser unchanged, and the relay's own
filters do the filtering. Only the Observer's read-only methods are forwarded; anything else is
UNIMPLEMENTED, so the bridge cannot be used to reach other services behind it.

Why not a package: the maintained Python gRPC-Web code (sonora) serves grpcio servicers
in-process; it has no client side to forward to a remote server, and the usual proxies
(Envoy, grpcwebproxy) are not in Debian or PyPI. The translation is only the framing
(`septum.ui.grpcweb`) around grpcio's generic calls.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import grpc
from aiohttp import web

from septum.ui import grpcweb
from septum.ui.errors import FramingError

log = logging.getLogger(__name__)

# Observer methods the UI uses, and whether the answer is a stream.
OBSERVER_METHODS: dict[str, bool] = {
    "/observer.Observer/GetFlows": True,
    "/observer.Observer/GetNodes": False,
    "/observer.Observer/GetNamespaces": False,
    "/observer.Observer/ServerStatus": False,
}

# A local method: request bytes -> response bytes, or raises LocalCallError.
LocalHandler = Callable[[bytes], Awaitable[bytes]]


class LocalCallError(Exception):
    """A local method's failure, carrying the gRPC status the browser sees."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class Bridge:
    channel: grpc.aio.Channel
    local: dict[str, LocalHandler]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        ctype = request.headers.get("Content-Type", "").split(";")[0].strip()
        response = web.StreamResponse(
            status=200,
            headers={"Content-Type": grpcweb.RESPONSE_CONTENT_TYPE, "Cache-Control": "no-store"},
        )
        if ctype not in grpcweb.CONTENT_TYPES:
            return await self._fail(
                request,
                response,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"Content-Type {ctype!r}: the UI speaks {grpcweb.RESPONSE_CONTENT_TYPE}",
            )
        try:
            payload = grpcweb.single_message(await request.read())
        except FramingError as err:
            return await self._fail(request, response, grpc.StatusCode.INVALID_ARGUMENT, str(err))
        timeout = grpcweb.parse_timeout(request.headers.get("grpc-timeout"))
        if path in self.local:
            try:
                answer = await self.local[path](payload)
            except LocalCallError as err:
                return await self._fail(request, response, err.code, err.message)
            await response.prepare(request)
            await response.write(grpcweb.message_frame(answer) + grpcweb.trailer_frame(0))
            return response
        streaming = OBSERVER_METHODS.get(path)
        if streaming is None:
            return await self._fail(
                request, response, grpc.StatusCode.UNIMPLEMENTED, f"{path}: not served by the UI"
            )
        await response.prepare(request)
        try:
            async for message in self._forward(path, streaming, payload, timeout):
                await response.write(grpcweb.message_frame(message))
        except grpc.aio.AioRpcError as err:
            await response.write(grpcweb.trailer_frame(err.code().value[0], err.details() or ""))
            return response
        except (ConnectionResetError, asyncio.CancelledError):
            # The browser went away (pause, a new filter, a closed tab): the upstream call is
            # cancelled with the generator.
            raise
        await response.write(grpcweb.trailer_frame(0))
        return response

    async def _forward(
        self, path: str, streaming: bool, payload: bytes, timeout: float | None
    ) -> AsyncIterator[bytes]:
        # No serializers: grpcio passes the request and response bytes through unchanged.
        if streaming:
            call = self.channel.unary_stream(path)(payload, timeout=timeout)
            try:
                async for message in call:
                    yield message
            finally:
                call.cancel()
        else:
            yield await self.channel.unary_unary(path)(payload, timeout=timeout)

    @staticmethod
    async def _fail(
        request: web.Request, response: web.StreamResponse, code: grpc.StatusCode, message: str
    ) -> web.StreamResponse:
        await response.prepare(request)
        await response.write(grpcweb.trailer_frame(code.value[0], message))
        return response
