"""The HTTP server on its own: stream files, content types, CORS, 404s, health, snapshots."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from agent.web.server import WebServer

TOKEN = "s3cr3t-token-abcdefghij"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[tuple[WebServer, str]]:
    (tmp_path / "stream").mkdir()
    (tmp_path / "stream" / "index.m3u8").write_text("#EXTM3U\n")
    (tmp_path / "stream" / "seg7.ts").write_bytes(b"\x47" * 188)
    (tmp_path / "stream" / "snapshot.jpg").write_bytes(b"\xff\xd8jpeg")
    (tmp_path / "secret.txt").write_text("do not serve")
    web_server = WebServer("127.0.0.1", 0)

    async def extra(_request: web.Request) -> web.Response:
        return web.json_response({"extra": True})

    web_server.add_routes([web.get("/extra", extra)])
    web_server.publish(TOKEN, tmp_path / "stream")
    await web_server.start()
    try:
        yield web_server, f"http://127.0.0.1:{web_server.port}"
    finally:
        await web_server.stop()


async def get(url: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url, allow_redirects=False) as response,
    ):
        return response.status, dict(response.headers), await response.read()


FFMPEG_HALF_SECONDS = """#EXTM3U
#EXT-X-VERSION:6
#EXT-X-TARGETDURATION:0
#EXT-X-MEDIA-SEQUENCE:7
#EXTINF:0.500000,
seg7.ts
#EXTINF:0.500000,
seg8.ts
"""


async def test_a_media_playlist_is_served_with_a_target_duration_players_accept(
    server: tuple[WebServer, str], tmp_path: Path
) -> None:
    """ffmpeg writes TARGETDURATION:0 for half-second segments (lrint rounds 0.5 to even);
    RFC 8216 rounds 0.5 up, so 1 is the least valid value. Everything else is as written."""
    (tmp_path / "stream" / "media.m3u8").write_text(FFMPEG_HALF_SECONDS)
    _, base = server
    status, headers, body = await get(f"{base}/stream/{TOKEN}/media.m3u8")
    assert status == 200
    assert body.decode() == FFMPEG_HALF_SECONDS.replace("TARGETDURATION:0", "TARGETDURATION:1")
    assert headers["Content-Type"] == "application/vnd.apple.mpegurl"
    longer = FFMPEG_HALF_SECONDS.replace("#EXTINF:0.500000", "#EXTINF:2.500000")
    (tmp_path / "stream" / "media.m3u8").write_text(longer)
    _, _, body = await get(f"{base}/stream/{TOKEN}/media.m3u8")
    assert "#EXT-X-TARGETDURATION:3\n" in body.decode()
    (tmp_path / "stream" / "media.m3u8").unlink()
    status, _, _ = await get(f"{base}/stream/{TOKEN}/media.m3u8")
    assert status == 404


async def test_a_player_gets_the_segment_about_to_be_listed_not_the_one_before(
    tmp_path: Path,
) -> None:
    """Players keep the distance behind the newest segment they first see: a playlist that is
    about to gain a segment is held until it has it, so no viewer starts a segment behind."""
    directory = tmp_path / "live"
    directory.mkdir()
    playlist = directory / "media.m3u8"
    web_server = WebServer("127.0.0.1", 0)
    web_server.publish(TOKEN, directory, segment_s=0.5)
    await web_server.start()
    url = f"http://127.0.0.1:{web_server.port}/stream/{TOKEN}/media.m3u8"

    async def list_next_segment(after_s: float) -> None:
        await asyncio.sleep(after_s)
        staged = directory / "media.m3u8.tmp"  # as ffmpeg does: written, then renamed
        staged.write_text(FFMPEG_HALF_SECONDS + "#EXTINF:0.500000,\nseg9.ts\n")
        staged.rename(playlist)

    def write_old(age_s: float) -> None:
        playlist.write_text(FFMPEG_HALF_SECONDS)
        listed = time.time() - age_s
        os.utime(playlist, (listed, listed))

    try:
        write_old(0.0)  # just listed: served at once
        started = time.monotonic()
        _, _, body = await get(url)
        assert time.monotonic() - started < 0.3  # a held one would take 0.45 s
        assert b"seg9.ts" not in body

        write_old(0.3)  # the next segment is due in 0.2 s: worth the wait
        started = time.monotonic()
        async with asyncio.TaskGroup() as group:
            group.create_task(list_next_segment(0.2))
            _, _, body = await get(url)
        assert b"seg9.ts" in body  # not served before it was listed
        assert time.monotonic() - started > 0.15

        write_old(0.3)  # an encoder that stalled: its last playlist, within two segments
        started = time.monotonic()
        _, _, body = await get(url)
        assert b"seg8.ts" in body
        assert b"seg9.ts" not in body
        assert 0.6 < time.monotonic() - started < 2.0
    finally:
        await web_server.stop()


async def test_stream_files_have_their_content_types_and_cors(
    server: tuple[WebServer, str],
) -> None:
    _, base = server
    status, headers, body = await get(f"{base}/stream/{TOKEN}/index.m3u8")
    assert (status, body) == (200, b"#EXTM3U\n")
    assert headers["Content-Type"] == "application/vnd.apple.mpegurl"
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert headers["Cache-Control"] == "no-cache"
    status, headers, body = await get(f"{base}/stream/{TOKEN}/seg7.ts")
    assert (status, len(body)) == (200, 188)
    assert headers["Content-Type"] == "video/mp2t"  # not text/vnd.trolltech.linguist
    assert headers["Access-Control-Allow-Origin"] == "*"
    status, headers, _ = await get(f"{base}/stream/{TOKEN}/seg7.ts", "HEAD")
    assert (status, headers["Content-Type"]) == (200, "video/mp2t")
    status, headers, _ = await get(f"{base}/stream/{TOKEN}/index.m3u8", "OPTIONS")
    assert status == 204
    assert headers["Access-Control-Allow-Origin"] == "*"


@pytest.mark.parametrize(
    "path",
    [
        "/stream/",
        "/stream/wrong-token/index.m3u8",
        f"/stream/{TOKEN}/missing.ts",
        f"/stream/{TOKEN}/snapshot.jpg",  # in the directory, but not a stream file
        f"/stream/{TOKEN}/..%2Fsecret.txt",
        f"/stream/{TOKEN}/%2E%2E/secret.txt",
        f"/stream/{TOKEN}/..",
        f"/stream/{TOKEN}/../secret.txt",
    ],
)
async def test_everything_else_under_stream_is_404_with_cors(
    server: tuple[WebServer, str], path: str
) -> None:
    """A player asking for a segment that is gone must see the 404, not a CORS error."""
    _, base = server
    status, headers, body = await get(base + path)
    assert status == 404
    assert b"do not serve" not in body
    assert headers["Access-Control-Allow-Origin"] == "*"


@pytest.mark.parametrize("path", ["/", "/stream/../secret.txt", "/secret.txt"])
async def test_other_paths_are_404_without_cors(server: tuple[WebServer, str], path: str) -> None:
    _, base = server
    status, headers, body = await get(base + path)
    assert status == 404
    assert b"do not serve" not in body
    assert "Access-Control-Allow-Origin" not in headers


async def test_a_segment_deleted_after_it_was_listed_is_404(
    server: tuple[WebServer, str], tmp_path: Path
) -> None:
    _, base = server
    (tmp_path / "stream" / "seg7.ts").unlink()
    status, headers, _ = await get(f"{base}/stream/{TOKEN}/seg7.ts")
    assert status == 404
    assert headers["Access-Control-Allow-Origin"] == "*"


async def test_unpublished_streams_disappear(server: tuple[WebServer, str]) -> None:
    web_server, base = server
    web_server.unpublish(TOKEN)
    status, _, _ = await get(f"{base}/stream/{TOKEN}/index.m3u8")
    assert status == 404


async def test_health_snapshot_and_added_routes(server: tuple[WebServer, str]) -> None:
    web_server, base = server
    status, headers, body = await get(f"{base}/healthz")
    assert (status, body) == (200, b'{"ok": true}')
    assert "Access-Control-Allow-Origin" not in headers  # probes are not pages
    status, headers, _ = await get(f"{base}/snapshot.jpg")
    assert status == 404  # nothing streams
    assert headers["Access-Control-Allow-Origin"] == "*"
    web_server.set_snapshot_source(lambda: b"\xff\xd8picture")
    status, headers, body = await get(f"{base}/snapshot.jpg")
    assert (status, body, headers["Content-Type"]) == (200, b"\xff\xd8picture", "image/jpeg")
    assert headers["Cache-Control"] == "no-store"
    assert headers["Access-Control-Allow-Origin"] == "*"  # dashboards show it
    status, headers, body = await get(f"{base}/extra")
    assert (status, body) == (200, b'{"extra": true}')
    assert "Access-Control-Allow-Origin" not in headers  # added routes (the webhook) get none


async def test_http_port_zero_picks_a_free_port() -> None:
    first, second = WebServer("127.0.0.1", 0), WebServer("127.0.0.1", 0)
    await first.start()
    await second.start()
    try:
        assert first.port != second.port
        assert all(port > 0 for port in (first.port, second.port))
    finally:
        await asyncio.gather(first.stop(), second.stop())
