"""agent/cast against the fake device, without the pipeline: a tiny pre-made live HLS stream."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fakecast import FakeCastDevice, LiveHlsServer, free_loopback_address
from pychromecast.controllers import heartbeat
from support.listener import RecordingListener

from agent.cast.device import ChromecastDevice
from agent.cast.discovery import Discovery
from agent.cast.manager import ChromecastManager
from agent.cast.spec import DeviceSpec, parse_device_spec
from agent.config import CastSettings
from agent.errors import ErrorCode, PagecastError
from agent.supervisor.state import EventName


def settings(**overrides: object) -> CastSettings:
    values: dict[str, object] = {
        "connect_timeout": 3.0,
        "play_timeout": 10.0,
        "discovery_timeout": 3.0,
        "recover_timeout": 20.0,
        "mdns": False,  # only the fake: real devices on a developer's LAN must not count
    }
    return CastSettings.model_validate(values | overrides)


@pytest.fixture
async def manager(fake_tv: FakeCastDevice) -> AsyncIterator[ChromecastManager]:
    async with ChromecastManager(settings(device=fake_tv.host)) as cast_manager:
        yield cast_manager


async def playing(
    manager: ChromecastManager,
    live_hls: LiveHlsServer,
) -> tuple[ChromecastDevice, RecordingListener]:
    device = await manager.resolve(None)
    assert device is not None
    listener = RecordingListener()
    await device.play(live_hls.url, "Test page", listener)
    return device, listener


async def test_play_reaches_playing_and_stop_quits_our_app(
    manager: ChromecastManager,
    fake_tv: FakeCastDevice,
    live_hls: LiveHlsServer,
) -> None:
    device, listener = await playing(manager, live_hls)
    assert device.name == "Fake TV"  # from /setup/eureka_info, though we connected by address
    assert fake_tv.player_state == "PLAYING"
    assert listener.player_states[-1] == "PLAYING"
    assert listener.devices[-1] == "Fake TV"
    load = fake_tv.loads[-1]
    assert load["media"]["streamType"] == "LIVE"
    assert load["media"]["contentType"] == "application/vnd.apple.mpegurl"
    assert load["media"]["metadata"]["title"] == "Test page"
    await fake_tv.wait_for(lambda: fake_tv.log.consecutive_segments() >= 5, within_s=15)

    await device.stop()
    assert fake_tv.app is None
    assert fake_tv.stops == ["app"]
    await device.stop()  # idempotent
    assert fake_tv.stops == ["app"]


async def test_stop_media_leaves_the_receiver_running(
    fake_tv: FakeCastDevice,
    live_hls: LiveHlsServer,
) -> None:
    async with ChromecastManager(settings(device=fake_tv.host, stop_action="stop_media")) as cm:
        device, _ = await playing(cm, live_hls)
        await device.stop()
        assert fake_tv.stops == ["media"]
        assert fake_tv.app is not None
        assert fake_tv.media is None


async def test_connection_is_kept_across_sessions(
    manager: ChromecastManager,
    fake_tv: FakeCastDevice,
    live_hls: LiveHlsServer,
) -> None:
    device, _ = await playing(manager, live_hls)
    await device.stop()
    again, listener = await playing(manager, live_hls)
    assert again is device
    assert fake_tv.accepted == 1
    assert listener.player_states[-1] == "PLAYING"
    assert len(fake_tv.loads) == 2
    await again.stop()


async def test_none_means_stream_only(manager: ChromecastManager) -> None:
    assert await manager.resolve("none") is None


async def test_name_through_known_hosts(
    fake_tv: FakeCastDevice,
    live_hls: LiveHlsServer,
) -> None:
    async with ChromecastManager(settings(device="fake tv", known_hosts=[fake_tv.host])) as cm:
        device, _ = await playing(cm, live_hls)
        assert device.host == fake_tv.host
        assert device.name == "Fake TV"
        with pytest.raises(PagecastError) as caught:
            await cm.resolve("Kitchen")
        assert caught.value.code is ErrorCode.DEVICE_NOT_FOUND
        assert "'Fake TV'" in caught.value.message  # lists what it saw
        await device.stop()


async def test_no_device_configured_uses_the_only_one_found(fake_tv: FakeCastDevice) -> None:
    async with ChromecastManager(settings(known_hosts=[fake_tv.host], discovery_timeout=1.5)) as cm:
        device = await cm.resolve(None)
        assert device is not None
        assert device.name == "Fake TV"


async def test_no_device_configured_and_several_found_needs_a_choice(
    fake_tv: FakeCastDevice,
) -> None:
    async with FakeCastDevice("Bedroom TV") as other:
        hosts = [fake_tv.host, other.host]
        async with ChromecastManager(settings(known_hosts=hosts, discovery_timeout=1.5)) as cm:
            with pytest.raises(PagecastError) as caught:
                await cm.resolve(None)
    assert caught.value.code is ErrorCode.DEVICE_NOT_FOUND
    assert "'Fake TV'" in caught.value.message
    assert "'Bedroom TV'" in caught.value.message


async def test_discovery_time_is_paid_once(fake_tv: FakeCastDevice) -> None:
    discovery = Discovery([fake_tv.host], mdns=False)
    try:
        first = await discovery.settle(1.5)
        # Discovery has already run 1.5 s: a second look must not wait for it again.
        again = await asyncio.wait_for(discovery.settle(1.5), 1.0)
    finally:
        await discovery.close()
    assert [i.friendly_name for i in first] == ["Fake TV"]
    assert again == first


async def test_no_device_configured_and_none_found_streams_only() -> None:
    # A first run without a TV still streams, so a newcomer sees pagecast work.
    async with ChromecastManager(settings(discovery_timeout=0.5)) as cm:
        assert await cm.resolve(None) is None


async def test_unreachable_address() -> None:
    host = free_loopback_address()  # nothing listens there
    async with ChromecastManager(settings(connect_timeout=1.0)) as cm:
        loop = asyncio.get_running_loop()
        began = loop.time()
        with pytest.raises(PagecastError) as caught:
            await cm.resolve(host)
        assert caught.value.code is ErrorCode.DEVICE_UNREACHABLE
        assert host in caught.value.message
        assert loop.time() - began < 5


async def test_load_failed_is_cast_failed_with_the_device_code(
    manager: ChromecastManager,
    fake_tv: FakeCastDevice,
    live_hls: LiveHlsServer,
) -> None:
    fake_tv.fail_next_load(104)
    device = await manager.resolve(None)
    assert device is not None
    with pytest.raises(PagecastError) as caught:
        await device.play(live_hls.url, "page", RecordingListener())
    assert caught.value.code is ErrorCode.CAST_FAILED
    assert "LOAD_FAILED 104 (MEDIA_SRC_NOT_SUPPORTED)" in caught.value.message
    await device.stop()  # the session's teardown: the receiver we launched is closed again
    assert fake_tv.app is None


async def test_refused_launch_is_cast_failed(
    manager: ChromecastManager,
    fake_tv: FakeCastDevice,
    live_hls: LiveHlsServer,
) -> None:
    fake_tv.refuse_launch("NOT_ALLOWED")
    with pytest.raises(PagecastError) as caught:
        await playing(manager, live_hls)
    assert caught.value.code is ErrorCode.CAST_FAILED
    assert "NOT_ALLOWED" in caught.value.message


async def test_reboot_is_recovered(
    manager: ChromecastManager,
    fake_tv: FakeCastDevice,
    live_hls: LiveHlsServer,
) -> None:
    device, listener = await playing(manager, live_hls)
    await fake_tv.reboot(down_s=2)
    back_at = asyncio.get_running_loop().time()
    await listener.wait_until(lambda: listener.named(EventName.RECOVERED), within_s=10)
    assert asyncio.get_running_loop().time() - back_at < 10
    assert listener.named(EventName.DEVICE_LOST)[0]["reason"] == "connection_lost"
    assert fake_tv.player_state == "PLAYING"
    assert len(fake_tv.loads) == 2
    assert listener.player_states[-1] == "PLAYING"
    await device.stop()


async def test_dropped_connection_is_recovered(
    manager: ChromecastManager,
    fake_tv: FakeCastDevice,
    live_hls: LiveHlsServer,
) -> None:
    device, listener = await playing(manager, live_hls)
    await fake_tv.drop_connections()
    await listener.wait_until(lambda: listener.named(EventName.RECOVERED), within_s=10)
    assert fake_tv.accepted == 2
    assert fake_tv.player_state == "PLAYING"
    await device.stop()


async def test_app_closed_by_the_device_is_relaunched(
    manager: ChromecastManager,
    fake_tv: FakeCastDevice,
    live_hls: LiveHlsServer,
) -> None:
    device, listener = await playing(manager, live_hls)
    await fake_tv.close_app()
    await listener.wait_until(lambda: listener.named(EventName.RECOVERED), within_s=10)
    assert listener.named(EventName.DEVICE_LOST)[0]["reason"] == "app_closed"
    assert fake_tv.launches == ["CC1AD845", "CC1AD845"]
    assert fake_tv.player_state == "PLAYING"
    await device.stop()


async def test_stalled_stream_is_loaded_again(
    manager: ChromecastManager,
    fake_tv: FakeCastDevice,
    live_hls: LiveHlsServer,
) -> None:
    device, listener = await playing(manager, live_hls)
    live_hls.freeze()
    await listener.wait_until(lambda: "BUFFERING" in listener.player_states, within_s=10)
    await listener.wait_until(lambda: listener.named(EventName.DEVICE_LOST), within_s=10)
    assert listener.named(EventName.DEVICE_LOST)[0]["reason"] == "idle"
    await device.stop()


async def test_another_senders_load_is_respected(
    manager: ChromecastManager,
    fake_tv: FakeCastDevice,
    live_hls: LiveHlsServer,
) -> None:
    device, listener = await playing(manager, live_hls)
    await fake_tv.other_sender_load()
    await listener.wait_until(lambda: listener.endings, within_s=10)
    assert listener.endings == [(None, "taken_over")]
    assert listener.named(EventName.DEVICE_LOST)[0]["reason"] == "taken_over"
    await device.stop()
    assert fake_tv.stops == []  # their media keeps playing
    assert fake_tv.media is not None
    assert fake_tv.media.content_id != live_hls.url


async def test_another_app_is_reclaimed_when_configured(
    fake_tv: FakeCastDevice,
    live_hls: LiveHlsServer,
) -> None:
    async with ChromecastManager(settings(device=fake_tv.host, on_takeover="reclaim")) as cm:
        device, listener = await playing(cm, live_hls)
        await fake_tv.other_app()
        await listener.wait_until(lambda: listener.named(EventName.RECOVERED), within_s=10)
        assert listener.named(EventName.RECOVERED)[0]["reason"] == "taken_over"
        assert listener.endings == []
        assert fake_tv.app is not None
        assert fake_tv.app.app_id == "CC1AD845"
        await device.stop()


async def test_a_device_that_stops_answering_pings_is_reconnected(
    manager: ChromecastManager,
    fake_tv: FakeCastDevice,
    live_hls: LiveHlsServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # pychromecast gives up on a silent device after 10 s + 10 s; shortened to keep this fast.
    monkeypatch.setattr(heartbeat, "HB_PING_TIME", 1)
    monkeypatch.setattr(heartbeat, "HB_PONG_TIME", 1)
    device, listener = await playing(manager, live_hls)
    fake_tv.answer_pings = False
    await listener.wait_until(lambda: listener.named(EventName.DEVICE_LOST), within_s=15)
    fake_tv.answer_pings = True
    await listener.wait_until(lambda: listener.named(EventName.RECOVERED), within_s=15)
    assert fake_tv.accepted >= 2
    assert fake_tv.player_state == "PLAYING"
    await device.stop()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("none", None),
        ("None", None),
        ("192.168.1.20", DeviceSpec(host="192.168.1.20")),
        ("192.168.1.20:8010", DeviceSpec(host="192.168.1.20", port=8010)),
        ("[fe80::1]:8009", DeviceSpec(host="fe80::1")),
        ("tv.lan", DeviceSpec(host="tv.lan")),
        ("kitchen:8009", DeviceSpec(host="kitchen")),
        ("Living Room TV", DeviceSpec(name="Living Room TV")),
        ("Kitchen", DeviceSpec(name="Kitchen")),
    ],
)
def test_device_spec(text: str, expected: DeviceSpec | None) -> None:
    assert parse_device_spec(text) == expected


async def test_a_stop_from_another_sender_is_respected(
    manager: ChromecastManager, fake_tv: FakeCastDevice, live_hls: LiveHlsServer
) -> None:
    _, listener = await playing(manager, live_hls)
    await fake_tv.other_sender_stop()
    await listener.wait_until(lambda: listener.endings, within_s=10)
    assert listener.endings == [(None, "taken_over")]
    assert listener.player_states[-1] == "IDLE"


async def test_a_device_away_for_long_gets_a_fresh_connection_on_play(
    manager: ChromecastManager, fake_tv: FakeCastDevice, live_hls: LiveHlsServer
) -> None:
    device, _ = await playing(manager, live_hls)
    await device.stop()
    # Away 8 s: pychromecast's doubling retry delay has grown to 8 s by then (1, 2, 4, 8),
    # longer than connect_timeout; play() must not wait for its next attempt.
    await fake_tv.reboot(down_s=8)
    again, listener = await playing(manager, live_hls)
    assert again is device
    assert listener.player_states[-1] == "PLAYING"
    await again.stop()


async def test_discover_command_lists_devices(fake_tv: FakeCastDevice, tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    cast = {"known_hosts": [fake_tv.host], "mdns": False, "discovery_timeout": 1.5}
    config.write_text(json.dumps({"cast": cast}))  # JSON is YAML
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent", "--config", str(config), "discover",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, err
    header, *rows = out.decode().splitlines()
    assert header.split() == ["NAME", "MODEL", "HOST", "PORT", "UUID"]
    assert [row.split("  ") for row in rows] == [
        ["Fake TV", "Chromecast", fake_tv.host, "8009", str(fake_tv.uuid)]
    ]
