"""The UI's HTTP server: the built front end and the gRPC-Web bridge on one aiohttp app."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from aiohttp import web

from septum.ui.bridge import Bridge, LocalHandler
from septum.ui.errors import AssetsError

DEFAULT_PORT = 12000  # Hubble UI's port
ASSETS_ENV = "SEPTUM_UI_ASSETS"
# Where the image installs the assets; a checkout's `make` builds them into build/ui.
_INSTALLED = Path("/usr/share/septum/ui")
_CHECKOUT = Path(__file__).resolve().parents[3] / "build" / "ui"


def find_assets(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The built front end: --assets, $SEPTUM_UI_ASSETS, the image's path, or the checkout's."""
    candidates = (
        [Path(explicit)]
        if explicit
        else [Path(p) for p in (os.environ.get(ASSETS_ENV),) if p] + [_INSTALLED, _CHECKOUT]
    )
    for path in candidates:
        if (path / "index.html").is_file():
            return path
    where = ", ".join(str(p) for p in candidates)
    raise AssetsError(f"--assets: no built UI (index.html) in {where}; run `make ui`")


@dataclass(frozen=True)
class Upstream:
    """The Observer to forward to: a gRPC target and, for TLS, its credentials."""

    target: str
    credentials: grpc.ChannelCredentials | None = None
    options: tuple[tuple[str, str], ...] = field(default=())

    def dial(self) -> grpc.aio.Channel:
        opts = [*self.options, ("grpc.max_receive_message_length", 64 * 1024 * 1024)]
        if self.credentials is None:
            return grpc.aio.insecure_channel(self.target, options=opts)
        return grpc.aio.secure_channel(self.target, self.credentials, options=opts)


def make_app(
    assets: Path, upstream: Upstream, local: dict[str, LocalHandler] | None = None
) -> web.Application:
    app = web.Application(client_max_size=16 * 1024 * 1024)
    index = assets / "index.html"

    async def open_channel(app: web.Application) -> None:
        app["bridge"] = Bridge(upstream.dial(), dict(local or {}))

    async def close_channel(app: web.Application) -> None:
        await app["bridge"].channel.close()

    async def grpc_call(request: web.Request) -> web.StreamResponse:
        bridge: Bridge = request.app["bridge"]
        return await bridge.handle(request)

    async def page(request: web.Request) -> web.StreamResponse:
        # The page's own routes (#/flows, ...) are client-side; any other GET is the page.
        return web.FileResponse(index, headers={"Cache-Control": "no-cache"})

    app.on_startup.append(open_channel)
    app.on_cleanup.append(close_channel)
    app.router.add_post("/{service}/{method}", grpc_call)
    if (assets / "assets").is_dir():
        app.router.add_static("/assets", assets / "assets")
    app.router.add_get("/", page)
    app.router.add_get("/{tail:.*}", page)
    return app
