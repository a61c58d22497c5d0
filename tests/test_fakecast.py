"""The fake device is only worth something if it is as strict as a real one: these tests show
that it refuses what a real Cast device refuses, and plays what a real one plays."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from fakecast import FakeCastDevice, LiveHlsServer

from agent.cast.discovery import discover_devices, format_devices
from agent.cast.manager import ChromecastManager
from agent.config import CastSettings
from agent.errors import ErrorCode, PagecastError


@asynccontextmanager
async def playing(fake_tv: FakeCastDevice, url: str) -> AsyncIterator[None]:
    """Our app plays ``url`` on the fake device for the duration of the block."""
    settings = CastSettings(device=fake_tv.host, connect_timeout=3, play_timeout=8)
    async with ChromecastManager(settings) as manager:
        device = await manager.resolve(None)
        assert device is not None
        await device.show(url, "page")
        yield


async def play(fake_tv: FakeCastDevice, url: str) -> None:
    async with playing(fake_tv, url):
        pass


async def test_plays_a_good_stream_like_a_receiver(
    fake_tv: FakeCastDevice, live_hls: LiveHlsServer
) -> None:
    async with playing(fake_tv, live_hls.url):
        await fake_tv.wait_for(lambda: fake_tv.log.consecutive_segments() >= 3, within_s=10)
    kinds = [fetch.kind for fetch in fake_tv.log.fetches]
    assert kinds[:3] == ["master", "playlist", "segment"]
    assert fake_tv.log.problems() == []
    assert fake_tv.log.probes[0] == {
        "video_profile": "Main",
        "level": 30,
        "width": 320,
        "height": 180,
        "audio": "aac",
    }


async def test_missing_cors_fails_playback(
    fake_tv: FakeCastDevice, live_hls: LiveHlsServer
) -> None:
    live_hls.cors = False
    with pytest.raises(PagecastError) as caught:
        await play(fake_tv, live_hls.url)
    assert caught.value.code is ErrorCode.CAST_FAILED
    assert "LOAD_FAILED 311" in caught.value.message
    assert "CORS" in (fake_tv.log.problems()[0].problem or "")


async def test_codecs_without_audio_fail_playback(
    fake_tv: FakeCastDevice, live_hls: LiveHlsServer
) -> None:
    live_hls.codecs = "avc1.4d401e"
    with pytest.raises(PagecastError) as caught:
        await play(fake_tv, live_hls.url)
    assert "LOAD_FAILED 411" in caught.value.message


async def test_a_media_playlist_is_not_a_master_playlist(
    fake_tv: FakeCastDevice, live_hls: LiveHlsServer
) -> None:
    with pytest.raises(PagecastError) as caught:
        await play(fake_tv, live_hls.url.replace("master", "media"))
    assert "LOAD_FAILED 411" in caught.value.message


async def test_a_stall_goes_buffering_then_idle_error(
    fake_tv: FakeCastDevice, live_hls: LiveHlsServer
) -> None:
    async with playing(fake_tv, live_hls.url):
        live_hls.freeze()
        await fake_tv.wait_for(lambda: ("IDLE", "ERROR") in fake_tv.player_history, within_s=12)
    history = fake_tv.player_history
    assert history[: history.index(("IDLE", "ERROR")) + 1] == [
        ("PLAYING", None),
        ("BUFFERING", None),
        ("IDLE", "ERROR"),
    ]


async def test_endlist_finishes_playback(fake_tv: FakeCastDevice, live_hls: LiveHlsServer) -> None:
    async with playing(fake_tv, live_hls.url):
        live_hls.freeze()
        live_hls.ended = True
        await fake_tv.wait_for(lambda: ("IDLE", "FINISHED") in fake_tv.player_history, within_s=8)


async def test_eureka_info_makes_it_discoverable_by_known_hosts(fake_tv: FakeCastDevice) -> None:
    devices = await discover_devices([fake_tv.host], for_s=1.5, mdns=False)
    assert [(d.name, d.model, d.host, d.port, d.uuid) for d in devices] == [
        ("Fake TV", "Chromecast", fake_tv.host, 8009, str(fake_tv.uuid))
    ]
    table = format_devices(devices)
    assert table.splitlines()[0].split() == ["NAME", "MODEL", "HOST", "PORT", "UUID"]
    assert fake_tv.host in table
