"""agent/cast against the fake device, without the pipeline: a tiny pre-made live HLS stream.

The device layer only: it reports facts and carries out actions. What to do about trouble is
agent/stream/casting.py's, tested in test_cast_policy.py.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from fakecast import FakeCastDevice, LiveHlsServer, free_loopback_address
from pychromecast import IDLE_APP_ID
from pychromecast.config import APP_MEDIA_RECEIVER
from support.agent_process import REPO

from agent.cast import connection
from agent.cast.base import BACKDROP_APP_ID, MEDIA_RECEIVER_APP_ID, DeviceFacts
from agent.cast.device import ChromecastDevice
from agent.cast.discovery import Discovery
from agent.cast.manager import ChromecastManager
from agent.cast.spec import DeviceSpec, parse_device_spec
from agent.config import CastSettings
from agent.errors import ErrorCode, PagecastError


def settings(**overrides: object) -> CastSettings:
    values: dict[str, object] = {
        "connect_timeout": 3.0,
        "play_timeout": 10.0,
        "discovery_timeout": 3.0,
        "mdns": False,  # only the fake: real devices on a developer's LAN must not count
    }
    return CastSettings.model_validate(values | overrides)


@pytest.fixture
async def manager(fake_tv: FakeCastDevice) -> AsyncIterator[ChromecastManager]:
    async with ChromecastManager(settings(device=fake_tv.host)) as cast_manager:
        yield cast_manager


async def playing(manager: ChromecastManager, live_hls: LiveHlsServer) -> ChromecastDevice:
    device = await manager.resolve(None)
    assert device is not None
    await device.show(live_hls.url, "Test page")
    return device


async def facts_until(device: ChromecastDevice, predicate: Any, within_s: float) -> DeviceFacts:
    with device.facts_changes.subscribe() as changes:
        async with asyncio.timeout(within_s):
            while not predicate(device.facts):
                await changes.get()
    return device.facts


def test_app_ids_are_pychromecasts() -> None:
    assert (MEDIA_RECEIVER_APP_ID, BACKDROP_APP_ID) == (APP_MEDIA_RECEIVER, IDLE_APP_ID)


def test_pychromecast_imports_requests_only_once_it_uses_it() -> None:
    """requests serves pychromecast's app lookups on Google's servers, which the agent never
    makes; it stays out of the agent's memory, and is still there if something uses it."""
    probe = """if True:
        import sys
        import agent.app
        assert "requests" not in sys.modules
        from pychromecast import config
        get = config.requests.get
        import requests
        assert get is requests.get and sys.modules["requests"] is requests
    """
    subprocess.run([sys.executable, "-c", probe], check=True, cwd=REPO, timeout=60)


async def test_show_reaches_playing_and_stop_quits_our_app(
    manager: ChromecastManager,
    fake_tv: FakeCastDevice,
    live_hls: LiveHlsServer,
) -> None:
    device = await playing(manager, live_hls)
    assert device.name == "Fake TV"  # from /setup/eureka_info, though we connected by address
    assert fake_tv.player_state == "PLAYING"
    facts = device.facts
    assert facts.connected
    assert facts.ours
    assert facts.player_state == "PLAYING"
    assert facts.app_id == MEDIA_RECEIVER_APP_ID
    assert facts.content_id == live_hls.url
    assert (facts.volume, facts.muted) == (1.0, False)
    load = fake_tv.loads[-1]
    assert load["media"]["streamType"] == "LIVE"
    assert load["media"]["contentType"] == "application/vnd.apple.mpegurl"
    assert load["media"]["metadata"]["title"] == "Test page"
    await fake_tv.wait_for(lambda: fake_tv.log.consecutive_segments() >= 5, within_s=15)

    await device.stop()
    assert fake_tv.app is None
    assert fake_tv.stops == ["app"]
    await facts_until(device, lambda f: f.idle_screen, within_s=5)
    await device.stop()  # idempotent
    assert fake_tv.stops == ["app"]


async def test_facts_tell_another_app_and_the_idle_screen(
    manager: ChromecastManager,
    fake_tv: FakeCastDevice,
    live_hls: LiveHlsServer,
) -> None:
    device = await playing(manager, live_hls)
    await fake_tv.other_app()
    facts = await facts_until(device, lambda f: f.app_id == "233637DE", within_s=5)
    assert not facts.ours
    assert not facts.idle_screen
    assert facts.player_state is None  # YouTube's media is not reported as ours
    await fake_tv.other_app_ends()
    facts = await facts_until(device, lambda f: f.idle_screen, within_s=5)
    assert facts.app_id == BACKDROP_APP_ID
    await device.stop()
    assert fake_tv.stops == []  # the idle screen is not ours to quit

    await fake_tv.go_away()
    assert (await facts_until(device, lambda f: not f.connected, within_s=5)) == DeviceFacts()


async def test_stop_leaves_another_senders_media_alone(
    manager: ChromecastManager,
    fake_tv: FakeCastDevice,
    live_hls: LiveHlsServer,
) -> None:
    device = await playing(manager, live_hls)
    await fake_tv.other_sender_load()
    facts = await facts_until(device, lambda f: f.content_id != live_hls.url, within_s=5)
    assert facts.app_id == MEDIA_RECEIVER_APP_ID
    assert not facts.ours
    await device.stop()
    assert fake_tv.stops == []
    assert fake_tv.player_state == "PLAYING"


async def test_stop_respects_the_deadline(
    manager: ChromecastManager,
    fake_tv: FakeCastDevice,
    live_hls: LiveHlsServer,
) -> None:
    device = await playing(manager, live_hls)
    fake_tv.answer_requests = False  # the TV hangs: our STOP is never answered
    loop = asyncio.get_running_loop()
    began = loop.time()
    await device.stop(deadline=began + 1.0)
    assert loop.time() - began < 2.5  # the deadline plus a grace, never pychromecast's 10 s
    began = loop.time()
    await device.stop()  # the manager's close at shutdown: not a second wait on a hung TV
    assert loop.time() - began < 0.5
    fake_tv.answer_requests = True


async def test_stop_media_leaves_the_receiver_running(
    fake_tv: FakeCastDevice,
    live_hls: LiveHlsServer,
) -> None:
    async with ChromecastManager(settings(device=fake_tv.host, stop_action="stop_media")) as cm:
        device = await playing(cm, live_hls)
        await device.stop()
        assert fake_tv.stops == ["media"]
        assert fake_tv.app is not None
        assert fake_tv.media is None


async def test_connection_is_kept_across_sessions(
    manager: ChromecastManager,
    fake_tv: FakeCastDevice,
    live_hls: LiveHlsServer,
) -> None:
    device = await playing(manager, live_hls)
    await device.stop()
    again = await playing(manager, live_hls)
    assert again is device
    assert fake_tv.accepted == 1
    assert again.facts.player_state == "PLAYING"
    assert len(fake_tv.loads) == 2
    await again.stop()


async def test_none_means_stream_only(manager: ChromecastManager) -> None:
    assert await manager.resolve("none") is None


async def test_name_through_known_hosts(
    fake_tv: FakeCastDevice,
    live_hls: LiveHlsServer,
) -> None:
    async with ChromecastManager(settings(device="fake tv", known_hosts=[fake_tv.host])) as cm:
        device = await playing(cm, live_hls)
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


async def test_concurrent_discovery_starts_make_one_browser(fake_tv: FakeCastDevice) -> None:
    discovery = Discovery([fake_tv.host], mdns=False)
    try:
        await asyncio.gather(*(discovery.start() for _ in range(5)))
        browsers = [t for t in threading.enumerate() if type(t).__name__ == "HostBrowser"]
        assert len(browsers) == 1
    finally:
        await discovery.close()


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
        await device.show(live_hls.url, "page")
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


async def test_every_socket_write_goes_through_the_serialized_send(
    manager: ChromecastManager,
    fake_tv: FakeCastDevice,
    live_hls: LiveHlsServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The lock around pychromecast's send_message only protects the TLS stream if every write
    # passes through it; a pychromecast that writes elsewhere must fail this test.
    writes: list[bool] = []
    sendall = ssl.SSLSocket.sendall

    def watched(sock: ssl.SSLSocket, data: Any, *args: Any) -> None:
        if threading.current_thread() is not threading.main_thread():
            writes.append(getattr(connection.writing, "active", False))
        sendall(sock, data, *args)

    monkeypatch.setattr(ssl.SSLSocket, "sendall", watched)
    device = await playing(manager, live_hls)  # CONNECT, GET_STATUS, LAUNCH, LOAD, PINGs
    await device.stop()
    assert len(writes) >= 4
    assert all(writes), writes


def test_a_changed_send_message_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    def send_message(self: Any, message: Any) -> None: ...

    monkeypatch.setattr(connection.SocketClient, "send_message", send_message)
    with pytest.raises(RuntimeError, match="send_message changed"):
        connection._serialize_writes(object())  # type: ignore[arg-type]


async def test_a_device_away_for_long_gets_a_fresh_connection_on_show(
    manager: ChromecastManager, fake_tv: FakeCastDevice, live_hls: LiveHlsServer
) -> None:
    device = await playing(manager, live_hls)
    await device.stop()
    # Away 8 s: pychromecast's doubling retry delay has grown to 8 s by then (1, 2, 4, 8),
    # longer than connect_timeout; show() must not wait for its next attempt.
    await fake_tv.reboot(down_s=8)
    again = await playing(manager, live_hls)
    assert again is device
    assert again.facts.player_state == "PLAYING"
    await again.stop()


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


async def test_an_announcement_reconnects_a_lost_device_at_once(
    fake_tv: FakeCastDevice, live_hls: LiveHlsServer
) -> None:
    async with ChromecastManager(settings(device="Fake TV", known_hosts=[fake_tv.host])) as cm:
        device = await playing(cm, live_hls)
        [info] = cm._discovery.devices()
        await fake_tv.go_away()
        # Away 8 s: pychromecast's doubling retry delay has grown to 8 s by then.
        await asyncio.sleep(8)
        await fake_tv.come_back()
        cm._discovery._add(info)  # what zeroconf reports when the device announces itself
        assert await device.wait_connected(3)
        await device.stop()


async def test_volume_is_set_and_reported_as_the_device_says(
    manager: ChromecastManager, fake_tv: FakeCastDevice, live_hls: LiveHlsServer
) -> None:
    device = await playing(manager, live_hls)
    await device.set_volume(0.3, None)
    facts = await facts_until(device, lambda f: f.volume == pytest.approx(0.3), within_s=5)
    assert facts.muted is False
    await device.set_volume(None, True)
    await facts_until(device, lambda f: f.muted is True, within_s=5)
    assert fake_tv.volume_requests == [{"level": 0.3}, {"muted": True}]
    # Changed on the device itself (its remote, another sender): reported too.
    fake_tv.press_volume(level=0.8, muted=False)
    await facts_until(device, lambda f: (f.volume, f.muted) == (0.8, False), within_s=5)
    await device.stop()


async def test_volume_on_an_away_device_is_unreachable(
    manager: ChromecastManager, fake_tv: FakeCastDevice, live_hls: LiveHlsServer
) -> None:
    device = await playing(manager, live_hls)
    await fake_tv.go_away()
    await facts_until(device, lambda f: not f.connected, within_s=5)
    with pytest.raises(PagecastError) as caught:
        await device.set_volume(0.5, None)
    assert caught.value.code is ErrorCode.DEVICE_UNREACHABLE
