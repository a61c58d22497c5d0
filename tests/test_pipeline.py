"""The live page pipeline with real Xvfb, Chromium, ffmpeg and HTTP (no supervisor, no MQTT).

Each test brings up its own backend (a private display, a browser, a free HTTP port) and
checks the stream from the outside, the way a Cast receiver sees it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import re
import signal
import socket
import subprocess
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from loguru import logger
from support.listener import RecordingListener
from support.media import (
    MediaPlaylist,
    average_rgb,
    close_to,
    fetch,
    media_playlist,
    media_playlist_url,
    probe_streams,
)
from support.pages import PageServer
from support.procs import Proc, chromium_browser, named
from support.streaming import (
    OneDevice,
    RecordingDevice,
    running_backend,
    until,
    until_async,
)

from agent.errors import ErrorCode, PagecastError
from agent.stream.address import local_address_towards
from agent.stream.backend import StreamBackend
from agent.stream.session import PipelineSession
from agent.supervisor.session import StreamRequest
from agent.supervisor.state import EventName

RED = (255, 0, 0)
BLUE = (0, 0, 255)
GREEN = (0, 255, 0)

pytestmark = pytest.mark.timeout(120)


def request(url: str, quality: str = "720p", **kwargs: object) -> StreamRequest:
    return StreamRequest(url=url, quality=quality, **kwargs)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def streaming(
    work_dir: Path, url: str, cast: Any = None, **overrides: Any
) -> AsyncIterator[tuple[StreamBackend, PipelineSession, RecordingListener]]:
    """A backend with session ``s1`` on ``url`` started; stopping it is left to the test."""
    listener = RecordingListener()
    async with running_backend(work_dir, cast, **overrides) as backend:
        session = backend.create_session("s1", request(url), listener)
        await session.start()
        yield backend, session, listener


async def newest_segment_rgb(master_url: str) -> tuple[int, int, int]:
    media_url = await asyncio.to_thread(media_playlist_url, master_url)
    playlist = await asyncio.to_thread(media_playlist, media_url)
    return await asyncio.to_thread(average_rgb, playlist.segments[-1])


async def wait_for_colour(master_url: str, rgb: tuple[int, int, int], within: float = 10) -> None:
    async def shows() -> bool:
        try:
            return close_to(await newest_segment_rgb(master_url), rgb)
        except subprocess.CalledProcessError:
            return False  # slid out of the window meanwhile, or no picture in it

    await until_async(shows, within=within, interval=0.2)


def segment_numbers(segments: list[str]) -> list[int]:
    return [int(re.search(r"seg(\d+)\.ts$", url).group(1)) for url in segments]  # type: ignore[union-attr]


def session_dirs(work_dir: Path) -> list[Path]:
    return [p for p in work_dir.rglob("session-*")]


async def test_a_page_streams_as_cast_playable_live_hls(
    tmp_path: Path, page_server: PageServer
) -> None:
    """What a receiver fetches: a LAN URL, HLS content types with CORS, H.264 + AAC-LC."""
    async with streaming(tmp_path, page_server.color("ff0000")) as (_, session, listener):
        try:
            [url] = listener.stream_urls
            host = urlsplit(url).hostname
            assert host is not None
            # Stream-only: the LAN address, never loopback (a TV could not reach it).
            if await asyncio.to_thread(_has_lan_address):
                assert not ipaddress.ip_address(host).is_loopback

            master = await asyncio.to_thread(fetch, url)
            assert master.status == 200
            assert master.headers["Content-Type"] == "application/vnd.apple.mpegurl"
            assert master.headers["Access-Control-Allow-Origin"] == "*"
            codecs = re.search(r'CODECS="([^"]+)"', master.body.decode())
            assert codecs is not None
            video, audio = codecs.group(1).split(",")
            assert video.startswith("avc1.64")  # H.264 High
            assert int(video[-2:], 16) <= 41  # level ≤ 4.1
            assert audio == "mp4a.40.2"  # AAC-LC

            media_url = await asyncio.to_thread(media_playlist_url, url)
            media = await asyncio.to_thread(fetch, media_url)
            assert media.headers["Content-Type"] == "application/vnd.apple.mpegurl"
            assert media.headers["Access-Control-Allow-Origin"] == "*"
            playlist = await asyncio.to_thread(media_playlist, media_url)
            segment = await asyncio.to_thread(fetch, playlist.segments[-1])
            assert segment.status == 200
            assert segment.headers["Content-Type"] == "video/mp2t"
            assert segment.headers["Access-Control-Allow-Origin"] == "*"

            streams = await asyncio.to_thread(probe_streams, url)
            v = next(s for s in streams if s["codec_type"] == "video")
            a = next(s for s in streams if s["codec_type"] == "audio")
            assert (v["codec_name"], v["profile"], v["pix_fmt"]) == ("h264", "High", "yuv420p")
            assert int(v["level"]) <= 41  # type: ignore[call-overload]
            assert (v["width"], v["height"]) == (1280, 720)
            assert (a["codec_name"], a["profile"], a["channels"]) == ("aac", "LC", 2)
            assert close_to(await asyncio.to_thread(average_rgb, playlist.segments[-1]), RED)
        finally:
            await session.stop()


async def test_the_playlist_slides_live_without_an_end(
    tmp_path: Path, page_server: PageServer
) -> None:
    """The window slides, the media sequence only grows, and no ENDLIST while it runs."""
    async with streaming(tmp_path, page_server.color("ff0000")) as (_, session, listener):
        try:
            media_url = await asyncio.to_thread(media_playlist_url, listener.stream_urls[0])
            samples: list[MediaPlaylist] = []

            async def five_segments_later() -> bool:
                samples.append(await asyncio.to_thread(media_playlist, media_url))
                return samples[-1].sequence - samples[0].sequence >= 5

            await until_async(five_segments_later, within=30, interval=1.0)
            assert not any(sample.ended for sample in samples)
            sequences = [sample.sequence for sample in samples]
            assert sequences == sorted(sequences)
            numbers = sorted({n for s in samples for n in segment_numbers(s.segments)})
            assert numbers == list(range(numbers[0], numbers[-1] + 1)), "a gap in the sequence"
        finally:
            await session.stop()


async def test_a_switch_shows_the_new_page_on_the_same_stream(
    tmp_path: Path, page_server: PageServer
) -> None:
    """Same encoder, playlist and URL; the new page fills the picture, numbering continues."""
    async with streaming(tmp_path, page_server.color("ff0000")) as (backend, session, listener):
        try:
            [url] = listener.stream_urls
            media_url = await asyncio.to_thread(media_playlist_url, url)
            before = await asyncio.to_thread(media_playlist, media_url)
            assert session.can_switch(request(page_server.color("0000ff")))
            assert not session.can_switch(request(page_server.color("0000ff"), "480p"))

            await session.switch("s2", request(page_server.url("/tall/0000ff")))
            assert listener.titles[-1] == "color 0000ff"
            # The bound is not the point (a loaded machine encodes slowly); the colour is.
            await wait_for_colour(url, BLUE, within=30)
            # Nothing but the page: no scrollbar on the right although the page is taller
            # than the window, no bar at the top, no mouse pointer in the middle.
            after = await asyncio.to_thread(media_playlist, media_url)
            for crop in ("16:720:1264:0", "1280:48:0:0", "32:32:624:344"):
                rgb = await asyncio.to_thread(average_rgb, after.segments[-1], crop)
                assert close_to(rgb, BLUE, 20), crop
            numbers = sorted(set(segment_numbers(before.segments + after.segments)))
            assert numbers == list(range(numbers[0], numbers[-1] + 1)), "a gap in the sequence"
            assert not after.ended
            assert listener.stream_urls == [url]

            async def snapshot_is_blue() -> bool:
                data = backend.latest_snapshot()
                return data is not None and close_to(
                    await asyncio.to_thread(average_rgb, data), BLUE
                )

            await until_async(snapshot_is_blue, within=10)
            assert not listener.events, "nothing broke, nothing to report"
        finally:
            await session.stop()


async def test_snapshots_and_figures_while_streaming_and_nothing_left_after_stop(
    tmp_path: Path, page_server: PageServer
) -> None:
    async with streaming(tmp_path, page_server.color("ff0000")) as (backend, session, listener):
        try:
            [url] = listener.stream_urls
            snapshot_url = url.split("/stream/")[0] + "/snapshot.jpg"
            await until(backend.latest_snapshot, within=5)
            snapshot = await asyncio.to_thread(fetch, snapshot_url)
            assert snapshot.headers["Content-Type"] == "image/jpeg"
            assert close_to(await asyncio.to_thread(average_rgb, snapshot.body), RED)
            assert backend.latest_snapshot() == snapshot.body
            figures = session.figures()
            assert figures is not None
            assert (figures.fps or 0) > 0
            assert (figures.bitrate_kbps or 0) > 0
        finally:
            await session.stop()

        # Stopped: the URL is gone, ffmpeg and the session files too; the browser stays warm.
        assert (await asyncio.to_thread(fetch, url)).status == 404
        assert (await asyncio.to_thread(fetch, snapshot_url)).status == 404
        assert not named("ffmpeg")
        assert chromium_browser()
        assert len(named("Xvfb")) == 1
        assert not session_dirs(tmp_path)
    assert not named("ffmpeg")
    assert not named("chrom")
    assert not named("Xvfb")
    assert not await asyncio.to_thread(lambda: list(tmp_path.iterdir()))


def _has_lan_address() -> bool:
    address = local_address_towards("192.0.2.1")
    return address is not None and not ipaddress.ip_address(address).is_loopback


def _renderers() -> list[Proc]:
    return [p for p in named("chrom") if "--type=renderer" in p.cmdline]


# part -> (its processes, the signal that takes it out, what the recovery names as the
# reason, whether ffmpeg starts anew)
BREAKDOWNS: dict[str, tuple[Callable[[], list[Proc]], signal.Signals, str, bool]] = {
    # The page's renderer, as when the kernel's OOM killer picks it.
    "renderer": (_renderers, signal.SIGKILL, "page crashed", False),
    # Chromium's browser process; its helpers follow it.
    "browser": (chromium_browser, signal.SIGKILL, "Chromium died", False),
    "ffmpeg": (lambda: named("ffmpeg"), signal.SIGKILL, "ffmpeg", True),
    # The display: browser and ffmpeg come back with it.
    "Xvfb": (lambda: named("Xvfb"), signal.SIGKILL, "Xvfb died", True),
    # Stopped, not dead: only the missing segments tell.
    "hung ffmpeg": (lambda: named("ffmpeg"), signal.SIGSTOP, "stalled", True),
}


@pytest.mark.parametrize("part", BREAKDOWNS)
async def test_a_killed_part_heals_on_the_same_url(
    tmp_path: Path, page_server: PageServer, part: str
) -> None:
    processes, signal_, reason, new_encoder = BREAKDOWNS[part]
    async with streaming(tmp_path, page_server.color("00ff00")) as (_, session, listener):
        try:
            [url] = listener.stream_urls
            media_url = await asyncio.to_thread(media_playlist_url, url)
            before = await asyncio.to_thread(media_playlist, media_url)
            last_before = segment_numbers(before.segments)[-1]
            victims = {p.pid for p in processes()}
            assert victims
            for pid in victims:
                os.kill(pid, signal_)

            await until(lambda: listener.named(EventName.RECOVERED), within=30)
            # The first recovery is this part's (a loaded machine may add a stall later).
            assert reason in listener.named(EventName.RECOVERED)[0]["reason"]
            replacements = {p.pid for p in processes()}
            assert replacements
            assert not replacements & victims

            async def segments_since_the_restart() -> list[int]:
                text = (await asyncio.to_thread(fetch, media_url)).body.decode()
                if new_encoder:  # only what the new ffmpeg wrote
                    _, tag, text = text.rpartition("#EXT-X-DISCONTINUITY")
                    if not tag:
                        return []
                numbers = [int(n) for n in re.findall(r"seg(\d+)\.ts", text)]
                return numbers if numbers and numbers[-1] > last_before else []

            await until_async(segments_since_the_restart, within=30, interval=0.5)
            await wait_for_colour(url, GREEN)
            # Numbering carries on across the restart: never back, never repeated.
            after = await asyncio.to_thread(media_playlist, media_url)
            numbers = segment_numbers(after.segments)
            assert numbers == sorted(set(numbers))
            assert after.sequence >= before.sequence
            assert not after.ended
            assert listener.stream_urls == [url]
            assert not listener.endings
            figures = session.figures()
            assert figures is not None
            assert figures.restarts >= 1
        finally:
            await session.stop()
        assert not named("ffmpeg")
        assert not session_dirs(tmp_path)
    assert not named("chrom")
    assert not named("Xvfb")


async def test_a_pipeline_that_keeps_dying_ends_the_session(
    tmp_path: Path, page_server: PageServer
) -> None:
    red = page_server.color("ff0000")
    async with streaming(tmp_path, red, stream={"max_restarts": 0}) as (_, session, listener):
        try:
            [ffmpeg] = named("ffmpeg")
            os.kill(ffmpeg.pid, signal.SIGKILL)
            await until(lambda: listener.endings, within=10)
            [(error, _reason)] = listener.endings
            assert error is not None
            assert error.code is ErrorCode.PIPELINE_FAILED
            assert "restarts" in error.message
            assert not listener.events
        finally:
            await session.stop()
        assert not named("ffmpeg")


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/status/404", "HTTP 404"),
        ("refused", "connection refused"),
        ("/slow/5", "timed out after 1s"),
        ("http://pagecast-test.invalid/", "ERR_NAME_NOT_RESOLVED"),
    ],
)
async def test_a_page_that_does_not_load_is_never_cast(
    tmp_path: Path, page_server: PageServer, path: str, reason: str
) -> None:
    if path == "refused":
        url = f"http://127.0.0.1:{_closed_port()}/"
    elif path.startswith("/"):
        url = page_server.url(path)
    else:
        url = path
    device = RecordingDevice()
    listener = RecordingListener()
    async with running_backend(
        tmp_path,
        cast=OneDevice(device),
        stream={"page_load_timeout_s": 1},
        # The name fails inside Chromium's resolver: no DNS server is asked, offline CI too.
        browser={"extra_args": ["--host-resolver-rules=MAP pagecast-test.invalid ~NOTFOUND"]},
    ) as backend:
        session = backend.create_session("s1", request(url), listener)
        with pytest.raises(PagecastError) as failure:
            await session.start()
        await session.stop()
        assert failure.value.code is ErrorCode.PAGE_LOAD_FAILED
        assert reason in failure.value.message
        assert not device.played
        assert not listener.stream_urls
        assert not named("ffmpeg")
        assert not session_dirs(tmp_path)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_casting_loads_a_reachable_url_after_segments_and_stops_the_device_first(
    tmp_path: Path, page_server: PageServer
) -> None:
    device = RecordingDevice(host="127.0.0.1")
    observed: dict[str, object] = {}

    async def on_play(stream_url: str) -> None:
        media = await asyncio.to_thread(
            media_playlist, await asyncio.to_thread(media_playlist_url, stream_url)
        )
        observed["segments_at_load"] = len(media.segments)

    async def on_stop() -> None:
        observed["ffmpeg_running_at_device_stop"] = bool(named("ffmpeg"))

    device.on_play, device.on_stop = on_play, on_stop
    red = page_server.color("ff0000")
    async with streaming(tmp_path, red, cast=OneDevice(device)) as (_, session, listener):
        await session.stop()
        await session.stop()  # idempotent
    [played] = device.played
    assert listener.stream_urls == [played]
    # The device is on loopback, so loopback is what reaches it.
    assert urlsplit(played).hostname == "127.0.0.1"
    assert observed["segments_at_load"] >= 2  # type: ignore[operator]
    assert device.stops == 1
    assert observed["ffmpeg_running_at_device_stop"] is True
    assert (listener.player_states[-1], listener.devices[-1]) == ("PLAYING", "Test TV")


async def test_a_replacement_on_the_same_device_takes_over_the_receiver(
    tmp_path: Path, page_server: PageServer
) -> None:
    device = RecordingDevice(host="127.0.0.1")
    red = page_server.color("ff0000")
    async with streaming(tmp_path, red, cast=OneDevice(device)) as (backend, session, _):
        # Same screen, other quality: no trip to the TV's ambient screen in between.
        await session.stop(successor=replace(request(red), quality="480p"))
        assert (device.releases, device.stops) == (1, 0)
        other = backend.create_session("s2", request(red), RecordingListener())
        await other.start()
        await other.stop(successor=replace(request(red), device="Bedroom TV"))
        assert (device.releases, device.stops) == (1, 1)
    assert named("ffmpeg") == []


async def test_quality_zoom_and_cold_browser(tmp_path: Path, page_server: PageServer) -> None:
    tiny = {"width": 640, "height": 360, "fps": 15, "bitrate_kbps": 600, "zoom": 2.0}
    listener = RecordingListener()
    async with running_backend(
        tmp_path, browser={"keep_warm": False}, qualities={"tiny": tiny}
    ) as backend:
        await asyncio.sleep(0.2)
        assert not named("chrom"), "keep_warm off: no browser before a start"
        session = backend.create_session(
            "s1", request(page_server.url("/corner"), "tiny"), listener
        )
        await session.start()
        try:
            url = listener.stream_urls[0]
            streams = await asyncio.to_thread(probe_streams, url)
            v = next(s for s in streams if s["codec_type"] == "video")
            assert (v["width"], v["height"]) == (640, 360)
            media_url = await asyncio.to_thread(media_playlist_url, url)
            newest = (await asyncio.to_thread(media_playlist, media_url)).segments[-1]
            # Zoom 2: the 100 px square covers 200x200 video pixels in the corner, and the
            # page still fits the window exactly (the square touches the edges).
            corner = await asyncio.to_thread(average_rgb, newest, "40:40:600:320")
            zoomed_part = await asyncio.to_thread(average_rgb, newest, "40:40:460:180")
            left = await asyncio.to_thread(average_rgb, newest, "40:40:0:0")
            assert close_to(corner, GREEN)
            assert close_to(zoomed_part, GREEN)
            assert close_to(left, RED)
        finally:
            await session.stop()
        assert not named("chrom")
        assert not named("Xvfb")
        assert not named("ffmpeg")


async def test_auth_profile_reaches_its_origin_and_stays_secret(tmp_path: Path) -> None:
    logs: list[str] = []
    sink = logger.add(logs.append, level="TRACE", format="{message} {extra}")
    secrets = ["cookie-secret-1", "header-secret-2", "storage-secret-3", "basic-secret-4"]
    listener = RecordingListener()
    try:
        with PageServer(require_basic=True) as pages:
            profile = {
                "origin": pages.origin,
                "cookies": [{"name": "session", "value": secrets[0]}],
                "headers": {"X-Token": secrets[1]},
                "local_storage": {"hassTokens": secrets[2]},
                "basic": {"username": "viewer", "password": secrets[3]},
            }
            async with running_backend(tmp_path, auth={"home": profile}) as backend:
                session = backend.create_session(
                    "s1", request(pages.url("/whoami"), auth="home"), listener
                )
                await session.start()
                await session.stop()
                unknown = backend.create_session(
                    "s2", request(pages.url("/whoami"), auth="nope"), listener
                )
                with pytest.raises(PagecastError) as failure:
                    await unknown.start()
                await unknown.stop()
                assert failure.value.code is ErrorCode.INVALID_PAYLOAD
    finally:
        logger.remove(sink)
    seen = json.loads(listener.titles[-1] or "{}")
    assert seen["cookie"] == f"session={secrets[0]}"
    assert seen["x_token"] == secrets[1]
    assert seen["localStorage"] == {"hassTokens": secrets[2]}
    assert seen["basic_user"] == "viewer"
    assert logs
    for secret in secrets:
        assert not any(secret in line for line in logs), f"{secret} leaked into the log"


async def test_leaving_the_backend_stops_a_session_left_running(
    tmp_path: Path, page_server: PageServer
) -> None:
    async with streaming(tmp_path, page_server.color("ff0000")):
        assert named("ffmpeg")
    assert not named("ffmpeg")
    assert not named("chrom")
    assert not named("Xvfb")
    assert not await asyncio.to_thread(lambda: list(tmp_path.iterdir()))
