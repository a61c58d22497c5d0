"""aiohttp server for the live HLS streams, ``/snapshot.jpg`` and ``/healthz``.

Streams live under ``/stream/<token>/`` where the token is unguessable and exists only while
its session runs. Every response carries ``Access-Control-Allow-Origin: *`` because Cast
receivers fetch the playlist and segments cross-origin.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

from aiohttp import web
from loguru import logger

# Set by hand: Python's mimetypes calls .ts "text/vnd.trolltech.linguist" (Qt translations).
CONTENT_TYPES = {
    ".m3u8": "application/vnd.apple.mpegurl",
    ".ts": "video/mp2t",
}
_FILE_NAME = re.compile(r"^[A-Za-z0-9_-]+\.(m3u8|ts)$")
_CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, HEAD, OPTIONS",
    "Access-Control-Allow-Headers": "*",
    "Access-Control-Expose-Headers": "Content-Length, Content-Type",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SnapshotSource = Callable[[], bytes | None]
# (healthy, JSON body): see agent/health.py.
HealthSource = Callable[[], tuple[bool, dict[str, Any]]]


@web.middleware
async def _cors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        exc.headers.update(_CORS)
        raise
    response.headers.update(_CORS)
    return response


class WebServer:
    """Routes may be added (``add_routes``) until start()."""

    def __init__(self, host: str, port: int) -> None:
        self._host = host
        self._port = port
        self._streams: dict[str, Path] = {}
        self._snapshot: SnapshotSource = lambda: None
        self._health: HealthSource = lambda: (True, {"ok": True})
        self.app = web.Application(middlewares=[_cors])
        self.app.add_routes(
            [
                web.get("/healthz", self._healthz),
                web.get("/snapshot.jpg", self._snapshot_jpg),
                web.get("/stream/{token}/{name}", self._stream_file),
                web.route("OPTIONS", "/stream/{token}/{name}", self._preflight),
            ]
        )
        self._runner: web.AppRunner | None = None
        self._bound_port: int | None = None

    def add_routes(self, routes: Iterable[web.AbstractRouteDef]) -> None:
        self.app.add_routes(routes)

    @property
    def port(self) -> int:
        """The port actually listened on (``http_port: 0`` picks a free one)."""
        if self._bound_port is None:
            raise RuntimeError("server not started")
        return self._bound_port

    def publish(self, token: str, directory: Path) -> None:
        self._streams[token] = directory

    def unpublish(self, token: str) -> None:
        self._streams.pop(token, None)

    def set_snapshot_source(self, source: SnapshotSource) -> None:
        self._snapshot = source

    def set_health_source(self, source: HealthSource) -> None:
        self._health = source

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        self._bound_port = int(self._runner.addresses[0][1])
        logger.info("HTTP server on {}:{}", self._host, self._bound_port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _healthz(self, _request: web.Request) -> web.Response:
        healthy, body = self._health()
        return web.json_response(body, status=200 if healthy else 503)

    async def _snapshot_jpg(self, _request: web.Request) -> web.Response:
        data = self._snapshot()
        if data is None:
            raise web.HTTPNotFound(text="no snapshot: nothing is streaming")
        return web.Response(
            body=data, content_type="image/jpeg", headers={"Cache-Control": "no-store"}
        )

    async def _preflight(self, request: web.Request) -> web.Response:
        self._resolve(request)
        return web.Response(status=204)

    async def _stream_file(self, request: web.Request) -> web.Response:
        path = self._resolve(request)
        try:
            body = await asyncio.to_thread(path.read_bytes)
        except (FileNotFoundError, IsADirectoryError):
            # A segment that slid out of the window and was deleted.
            raise web.HTTPNotFound() from None
        playlist = path.suffix == ".m3u8"
        return web.Response(
            body=body,
            headers={
                "Content-Type": CONTENT_TYPES[path.suffix],
                # The live playlist changes every segment; segments never change.
                "Cache-Control": "no-cache" if playlist else "max-age=60",
            },
        )

    def _resolve(self, request: web.Request) -> Path:
        directory = self._streams.get(request.match_info["token"])
        name = request.match_info["name"]
        # Only flat names of playlists and segments: no "..", no other files of the directory.
        if directory is None or not _FILE_NAME.match(name):
            raise web.HTTPNotFound()
        return directory / name
