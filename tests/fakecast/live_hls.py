"""A cheap live HLS stream for cast tests that do not need the real pipeline: segments made once
by ffmpeg, served as a sliding live window that advances with the wall clock."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from aiohttp import web

SEGMENT_S = 1.0
WINDOW = 6


def make_hls_segments(directory: Path, count: int = 8) -> list[Path]:
    """``count`` one-second MPEG-TS segments: H.264 Main 3.0 with a keyframe each + silent AAC."""
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            "ffmpeg",
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            f"testsrc=size=320x180:rate=10:duration={count}",
            "-f",
            "lavfi",
            "-i",
            "anullsrc=channel_layout=stereo:sample_rate=44100",
            "-t",
            str(count),
            "-map",
            "0:v",
            "-map",
            "1:a",
            "-c:v",
            "libx264",
            "-profile:v",
            "main",
            "-level",
            "3.0",
            "-pix_fmt",
            "yuv420p",
            "-g",
            "10",
            "-keyint_min",
            "10",
            "-sc_threshold",
            "0",
            "-c:a",
            "aac",
            "-b:a",
            "32k",
            "-f",
            "hls",
            "-hls_time",
            "1",
            "-hls_list_size",
            "0",
            "-hls_segment_filename",
            str(directory / "seg%d.ts"),
            str(directory / "vod.m3u8"),
        ],
        check=True,
        timeout=60,
    )
    return sorted(directory.glob("seg*.ts"), key=lambda p: int(p.stem[3:]))


class LiveHlsServer:
    """Serves ``/live/master.m3u8``; ``cors``, ``advancing`` and ``ended`` are test knobs."""

    def __init__(self, segments: list[Path], host: str = "127.0.0.1") -> None:
        self._segments = segments
        self._host = host
        self._started = time.monotonic()
        self._frozen_at: int | None = None
        self._runner: web.AppRunner | None = None
        self.cors = True
        self.ended = False
        self.codecs = "avc1.4d401e,mp4a.40.2"
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self.port}/live/master.m3u8"

    def freeze(self) -> None:
        """Stop producing segments (an encoder that hangs)."""
        self._frozen_at = self._live_edge()

    def thaw(self) -> None:
        """Produce segments again (from the live edge of now, as a restarted encoder would)."""
        self._frozen_at = None

    def _live_edge(self) -> int:
        if self._frozen_at is not None:
            return self._frozen_at
        return WINDOW + int((time.monotonic() - self._started) / SEGMENT_S)

    async def __aenter__(self) -> LiveHlsServer:
        app = web.Application()
        app.router.add_get("/live/master.m3u8", self._master)
        app.router.add_get("/live/media.m3u8", self._media)
        app.router.add_get("/live/seg{n:\\d+}.ts", self._segment)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner:
            await self._runner.cleanup()

    def _headers(self) -> dict[str, str]:
        return {"Access-Control-Allow-Origin": "*"} if self.cors else {}

    async def _master(self, _request: web.Request) -> web.Response:
        body = (
            "#EXTM3U\n#EXT-X-VERSION:3\n"
            f'#EXT-X-STREAM-INF:BANDWIDTH=400000,RESOLUTION=320x180,CODECS="{self.codecs}"\n'
            "media.m3u8\n"
        )
        return web.Response(
            text=body, content_type="application/vnd.apple.mpegurl", headers=self._headers()
        )

    async def _media(self, _request: web.Request) -> web.Response:
        edge = self._live_edge()
        first = edge - WINDOW
        lines = [
            "#EXTM3U",
            "#EXT-X-VERSION:3",
            f"#EXT-X-TARGETDURATION:{int(SEGMENT_S)}",
            f"#EXT-X-MEDIA-SEQUENCE:{first}",
        ]
        for n in range(first, edge):
            lines += [f"#EXTINF:{SEGMENT_S:.3f},", f"seg{n}.ts"]
        if self.ended:
            lines.append("#EXT-X-ENDLIST")
        return web.Response(
            text="\n".join(lines) + "\n",
            content_type="application/vnd.apple.mpegurl",
            headers=self._headers(),
        )

    async def _segment(self, request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        if n >= self._live_edge():
            raise web.HTTPNotFound()
        body = self._segments[n % len(self._segments)].read_bytes()
        return web.Response(body=body, content_type="video/mp2t", headers=self._headers())
