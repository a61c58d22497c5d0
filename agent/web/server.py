"""aiohttp server for the live HLS streams, ``/snapshot.jpg`` and ``/healthz``.

Streams live under ``/stream/<token>/`` where the token is unguessable and exists only while
its session runs. Stream and snapshot responses carry ``Access-Control-Allow-Origin: *``
because Cast receivers and dashboards fetch them cross-origin; nothing else does: the webhook
API added on this server must not be readable by any page a browser happens to show.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from loguru import logger

from agent.stream.hls import (
    HLS_CONTENT_TYPE,
    MEDIA_PLAYLIST,
    SEGMENT_CONTENT_TYPE,
    conformed,
    fresh_playlist,
)

CONTENT_TYPES = {".m3u8": HLS_CONTENT_TYPE, ".ts": SEGMENT_CONTENT_TYPE}
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


# What players and dashboards fetch cross-origin (including a 404 for a segment gone).
_CORS_PATHS = ("/stream/", "/snapshot.jpg")


@web.middleware
async def _cors(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not request.path.startswith(_CORS_PATHS):
        return await handler(request)
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
        self._streams: dict[str, _Stream] = {}
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

    def publish(self, token: str, directory: Path, *, segment_s: float | None = None) -> None:
        """Serve ``directory`` under ``/stream/<token>/``. With ``segment_s``, a media
        playlist request waits for a segment about to be listed (agent/stream/hls.py)."""
        self._streams[token] = _Stream(directory, segment_s)

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

    async def _stream_file(self, request: web.Request) -> web.StreamResponse:
        path, segment_s = self._resolve(request)
        if path.suffix == ".m3u8":
            return await self._playlist(path, segment_s if path.name == MEDIA_PLAYLIST else None)
        # FileResponse answers 404 for a segment that slid out of the window and was deleted.
        return web.FileResponse(
            path,
            headers={
                "Content-Type": CONTENT_TYPES[path.suffix],
                "Cache-Control": "max-age=60",  # a segment never changes
            },
        )

    async def _playlist(self, path: Path, segment_s: float | None) -> web.Response:
        try:
            if segment_s is None:
                text = conformed(await asyncio.to_thread(path.read_text))
            else:
                text = await fresh_playlist(path, segment_s)
        except FileNotFoundError:
            raise web.HTTPNotFound() from None
        return web.Response(
            body=text.encode(),
            headers={"Content-Type": HLS_CONTENT_TYPE, "Cache-Control": "no-cache"},
        )

    def _resolve(self, request: web.Request) -> tuple[Path, float | None]:
        stream = self._streams.get(request.match_info["token"])
        name = request.match_info["name"]
        # Only flat names of playlists and segments: no "..", no other files of the directory.
        if stream is None or not _FILE_NAME.match(name):
            raise web.HTTPNotFound()
        return stream.directory / name, stream.segment_s


@dataclass(frozen=True, slots=True)
class _Stream:
    directory: Path
    segment_s: float | None
