"""The one cast recovery policy (agent/stream/casting.py): against the fake device speaking
real Cast v2 to unmodified pychromecast, plus a few timing rules with a plain device double.

Times are compressed through CastSettings (park_after_s, resume_after_s, recover_timeout)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field, replace

import pytest
from fakecast import FakeCastDevice, LiveHlsServer
from pychromecast.controllers import heartbeat
from support.listener import RecordingListener

from agent.broadcast import Broadcast
from agent.cast.base import MEDIA_RECEIVER_APP_ID, DeviceFacts
from agent.cast.manager import ChromecastManager
from agent.config import CastSettings
from agent.errors import ErrorCode, PagecastError
from agent.stream.casting import AWAY, CLOSED, IDLE, TAKEN_OVER, Casting, Parking, judge
from agent.supervisor.state import EventName

pytestmark = pytest.mark.timeout(90)

YOUTUBE = "233637DE"


def settings(**overrides: object) -> CastSettings:
    values: dict[str, object] = {
        "connect_timeout": 3.0,
        "play_timeout": 10.0,
        "mdns": False,
        "park_after_s": 1.0,
        "resume_after_s": 1.5,
    }
    return CastSettings.model_validate(values | overrides)


@dataclass
class Pipeline:
    """Stands in for the session's pipeline: records park/unpark."""

    calls: list[str] = field(default_factory=list)

    @property
    def parked(self) -> bool:
        return bool(self.calls) and self.calls[-1] == "park"

    async def park(self) -> None:
        self.calls.append("park")

    async def unpark(self) -> None:
        if self.parked:
            self.calls.append("unpark")


@dataclass
class Cast:
    casting: Casting
    listener: RecordingListener
    pipeline: Pipeline
    tv: FakeCastDevice


Rig = Callable[..., AbstractAsyncContextManager[Cast]]


@pytest.fixture
def cast(fake_tv: FakeCastDevice, live_hls: LiveHlsServer) -> Rig:
    @asynccontextmanager
    async def run(**overrides: object) -> AsyncIterator[Cast]:
        cast_settings = settings(device=fake_tv.host, **overrides)
        async with ChromecastManager(cast_settings) as manager:
            device = await manager.resolve(None)
            listener, pipeline = RecordingListener(), Pipeline()
            casting = Casting(
                device, listener, cast_settings, Parking(pipeline.park, pipeline.unpark)
            )
            await casting.show(live_hls.url, "Test page")
            try:
                yield Cast(casting, listener, pipeline, fake_tv)
            finally:
                await casting.stop(handover=False)

    return run


def launches(tv: FakeCastDevice) -> int:
    return tv.launches.count(MEDIA_RECEIVER_APP_ID)


async def test_playing_is_reported_with_the_device_name(cast: Rig) -> None:
    async with cast() as c:
        await c.listener.wait_until(lambda: "PLAYING" in c.listener.player_states, within_s=5)
        assert c.listener.devices[-1] == "Fake TV"
        assert c.listener.waiting == []


async def test_reboot_is_waited_for_and_cast_again(cast: Rig) -> None:
    async with cast() as c:
        await c.tv.reboot(down_s=2)
        await c.listener.wait_until(lambda: c.listener.named(EventName.RECOVERED), within_s=15)
        assert c.listener.named(EventName.DEVICE_LOST)[0]["reason"] == AWAY
        recovered = c.listener.named(EventName.RECOVERED)[0]
        assert recovered["reason"] == AWAY
        assert recovered["after_s"] >= 2
        assert c.listener.waiting == ["device_away", None]
        assert c.tv.player_state == "PLAYING"
        assert len(c.tv.loads) == 2
        assert c.listener.player_states[-1] == "PLAYING"
        assert None in c.listener.player_states  # nothing known to play while it was away


async def test_a_network_blip_does_not_reload(cast: Rig) -> None:
    async with cast() as c:
        await c.tv.drop_connections()
        await c.listener.wait_until(lambda: c.listener.named(EventName.RECOVERED), within_s=15)
        assert c.tv.accepted == 2
        assert c.tv.player_state == "PLAYING"
        assert len(c.tv.loads) == 1  # our media kept playing: nothing to cast again


async def test_away_longer_than_the_grace_parks_until_back(cast: Rig) -> None:
    async with cast() as c:
        await c.tv.go_away()
        await c.listener.wait_until(lambda: c.listener.waiting == ["device_away"], within_s=5)
        await asyncio.sleep(1.5)  # park_after_s is 1
        assert c.pipeline.calls == ["park"]
        await asyncio.sleep(3)  # the policy keeps probing; nothing gives up (no timeout)
        assert c.listener.endings == []
        await c.tv.come_back()  # to Backdrop, like a TV switched on
        await c.listener.wait_until(lambda: c.listener.named(EventName.RECOVERED), within_s=35)
        assert c.pipeline.calls == ["park", "unpark"]
        assert c.listener.named(EventName.RECOVERED)[0]["after_s"] >= 4.5
        assert c.tv.player_state == "PLAYING"
        assert c.listener.waiting[-1] is None


async def test_recover_timeout_gives_up(cast: Rig) -> None:
    async with cast(recover_timeout=2) as c:
        await c.tv.go_away()
        await c.listener.wait_until(lambda: c.listener.endings, within_s=10)
        error, reason = c.listener.endings[0]
        assert reason == "device_unreachable"
        assert error is not None
        assert error.code is ErrorCode.DEVICE_UNREACHABLE


async def test_app_closed_by_the_device_is_relaunched(cast: Rig) -> None:
    async with cast() as c:
        await c.tv.close_app()
        await c.listener.wait_until(lambda: c.listener.named(EventName.RECOVERED), within_s=10)
        assert c.listener.named(EventName.DEVICE_LOST)[0]["reason"] == CLOSED
        assert launches(c.tv) == 2
        assert c.tv.player_state == "PLAYING"
        assert c.listener.waiting == []  # cast again at once, never waiting


async def test_stalled_stream_is_loaded_again(cast: Rig, live_hls: LiveHlsServer) -> None:
    async with cast() as c:
        live_hls.freeze()
        await c.listener.wait_until(lambda: "BUFFERING" in c.listener.player_states, within_s=10)
        await c.listener.wait_until(lambda: c.listener.named(EventName.DEVICE_LOST), within_s=10)
        assert c.listener.named(EventName.DEVICE_LOST)[0]["reason"] == IDLE
        live_hls.thaw()
        await c.listener.wait_until(lambda: c.listener.named(EventName.RECOVERED), within_s=20)
        assert len(c.tv.loads) >= 2
        await c.tv.wait_for(lambda: c.tv.player_state == "PLAYING", within_s=10)


async def test_another_app_is_outlived_then_resumed(cast: Rig) -> None:
    async with cast() as c:
        await c.tv.other_app(YOUTUBE)
        await c.listener.wait_until(lambda: c.listener.waiting == ["taken_over"], within_s=5)
        assert c.listener.named(EventName.DEVICE_LOST)[0]["reason"] == TAKEN_OVER
        await asyncio.sleep(4)  # never relaunched while YouTube runs, parked meanwhile
        assert launches(c.tv) == 1
        assert c.tv.app is not None
        assert c.tv.app.app_id == YOUTUBE
        assert c.pipeline.calls == ["park"]

        await c.tv.other_app_ends()
        idle_at = time.monotonic()
        await c.tv.wait_for(lambda: launches(c.tv) == 2, within_s=10)
        assert time.monotonic() - idle_at >= 1.5  # resume_after_s of idle screen first
        await c.listener.wait_until(lambda: c.listener.named(EventName.RECOVERED), within_s=10)
        assert c.listener.named(EventName.RECOVERED)[0]["reason"] == TAKEN_OVER
        assert c.listener.waiting == ["taken_over", None]
        assert c.pipeline.calls == ["park", "unpark"]
        assert c.tv.player_state == "PLAYING"


async def test_another_senders_media_is_outlived(cast: Rig, live_hls: LiveHlsServer) -> None:
    async with cast() as c:
        await c.tv.other_sender_load()
        await c.listener.wait_until(lambda: c.listener.waiting == ["taken_over"], within_s=5)
        await asyncio.sleep(3)
        assert len(c.tv.loads) == 1  # their media plays on
        assert c.tv.media is not None
        assert c.tv.media.content_id != live_hls.url
        await c.tv.other_app_ends()
        await c.listener.wait_until(lambda: c.listener.named(EventName.RECOVERED), within_s=10)
        assert c.tv.media is not None
        assert c.tv.media.content_id == live_hls.url


async def test_respect_ends_the_stream_and_leaves_their_media(cast: Rig) -> None:
    async with cast(on_takeover="respect") as c:
        await c.tv.other_sender_load()
        await c.listener.wait_until(lambda: c.listener.endings, within_s=10)
        assert c.listener.endings == [(None, TAKEN_OVER)]
        await c.casting.stop(handover=False)
        assert c.tv.stops == []  # their media keeps playing
        assert c.tv.player_state == "PLAYING"


async def test_a_stop_from_another_sender_is_a_takeover(cast: Rig) -> None:
    async with cast(on_takeover="respect") as c:
        await c.tv.other_sender_stop()
        await c.listener.wait_until(lambda: c.listener.endings, within_s=10)
        assert c.listener.endings == [(None, TAKEN_OVER)]
        assert c.listener.player_states[-1] == "IDLE"


async def test_reclaim_casts_again_at_once(cast: Rig) -> None:
    async with cast(on_takeover="reclaim") as c:
        await c.tv.other_app()
        await c.listener.wait_until(lambda: c.listener.named(EventName.RECOVERED), within_s=10)
        assert c.listener.named(EventName.RECOVERED)[0]["reason"] == TAKEN_OVER
        assert c.listener.endings == []
        assert c.tv.app is not None
        assert c.tv.app.app_id == MEDIA_RECEIVER_APP_ID


async def test_a_device_that_stops_answering_pings_is_reconnected(
    cast: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    # pychromecast gives up on a silent device after 10 s + 10 s; shortened to keep this fast.
    monkeypatch.setattr(heartbeat, "HB_PING_TIME", 1)
    monkeypatch.setattr(heartbeat, "HB_PONG_TIME", 1)
    async with cast() as c:
        c.tv.answer_pings = False
        await c.listener.wait_until(lambda: c.listener.named(EventName.DEVICE_LOST), within_s=15)
        c.tv.answer_pings = True
        await c.listener.wait_until(lambda: c.listener.named(EventName.RECOVERED), within_s=20)
        assert c.tv.accepted >= 2
        assert c.tv.player_state == "PLAYING"


# -- the judgement, and timing rules with a device double -------------------------------------

OURS = DeviceFacts(
    connected=True,
    app_id=MEDIA_RECEIVER_APP_ID,
    ours=True,
    player_state="PLAYING",
    content_id="http://agent/stream",
    media_session_id=1,
)


@pytest.mark.parametrize(
    ("facts", "verdict"),
    [
        (OURS, None),
        (replace(OURS, player_state="BUFFERING"), None),
        (DeviceFacts(), AWAY),
        (DeviceFacts(connected=True, app_id="E8C28D3C", idle_screen=True), CLOSED),
        (DeviceFacts(connected=True, idle_screen=True), CLOSED),
        (DeviceFacts(connected=True, app_id=YOUTUBE), TAKEN_OVER),
        (replace(OURS, ours=False, content_id="http://other/movie.mp4"), TAKEN_OVER),
        (replace(OURS, player_state="IDLE", idle_reason="CANCELLED"), TAKEN_OVER),
        (replace(OURS, player_state="IDLE", idle_reason="INTERRUPTED"), TAKEN_OVER),
        (replace(OURS, player_state="IDLE", idle_reason="ERROR"), IDLE),
        (replace(OURS, ours=False, content_id=None, player_state=None), IDLE),
    ],
)
def test_judge(facts: DeviceFacts, verdict: str | None) -> None:
    assert judge(facts) == verdict


class DoubleDevice:
    """A CastDevice double whose facts the test sets."""

    name = "Double TV"
    host = "192.0.2.10"

    def __init__(self) -> None:
        self.facts = DeviceFacts()
        self.facts_changes: Broadcast[DeviceFacts] = Broadcast()
        self.shows: list[float] = []
        self.stops: list[float | None] = []

    def set(self, facts: DeviceFacts) -> None:
        self.facts = facts
        self.facts_changes.publish(facts)

    async def show(self, stream_url: str, title: str) -> None:
        self.shows.append(time.monotonic())
        self.set(replace(OURS, content_id=stream_url))

    async def stop(self, deadline: float | None = None) -> None:
        self.stops.append(deadline)

    async def release(self) -> None:
        pass

    async def set_volume(self, level: float | None, muted: bool | None) -> None:
        pass

    async def wait_connected(self, within_s: float) -> bool:
        await asyncio.sleep(within_s)
        return self.facts.connected

    async def reconnect(self) -> None:
        pass


async def test_resume_waits_for_an_unbroken_idle_screen() -> None:
    device, listener, pipeline = DoubleDevice(), RecordingListener(), Pipeline()
    cast_settings = settings(resume_after_s=1.0, park_after_s=60)
    casting = Casting(device, listener, cast_settings, Parking(pipeline.park, pipeline.unpark))
    await casting.show("http://agent/stream", "page")
    try:
        device.set(DeviceFacts(connected=True, app_id=YOUTUBE))
        await listener.wait_until(lambda: listener.waiting == ["taken_over"], within_s=5)
        idle = DeviceFacts(connected=True, app_id="E8C28D3C", idle_screen=True)
        device.set(idle)
        await asyncio.sleep(0.6)
        device.set(DeviceFacts(connected=True, app_id="5E81F6DB"))  # an Assistant timer
        await asyncio.sleep(0.6)
        device.set(idle)
        idle_at = time.monotonic()
        await listener.wait_until(lambda: listener.named(EventName.RECOVERED), within_s=5)
        assert len(device.shows) == 2
        assert device.shows[1] - idle_at >= 1.0  # counted from the last idle screen
    finally:
        await casting.stop(handover=False)
    assert len(device.stops) == 1
    assert device.stops[0] is not None  # a bounded stop, always


async def test_a_resumed_start_waits_for_its_device() -> None:
    device, listener, pipeline = DoubleDevice(), RecordingListener(), Pipeline()
    device.set(DeviceFacts(connected=True, idle_screen=True))
    attempts: list[float] = []

    async def resolve() -> DoubleDevice:
        attempts.append(time.monotonic())
        if len(attempts) < 3:
            raise PagecastError(ErrorCode.DEVICE_UNREACHABLE, "Double TV not reachable")
        return device

    cast_settings = settings(park_after_s=0.5)
    casting = Casting(None, listener, cast_settings, Parking(pipeline.park, pipeline.unpark))

    async def stream_url(host: str) -> str:
        return f"http://near-{host}/stream"

    casting.await_device(resolve, stream_url, "page")
    try:
        await listener.wait_until(lambda: listener.named(EventName.RECOVERED), within_s=15)
    finally:
        await casting.stop(handover=False)
    assert listener.waiting == ["device_away", None]
    assert listener.stream_urls == ["http://near-192.0.2.10/stream"]
    assert device.facts.content_id == "http://near-192.0.2.10/stream"
    assert pipeline.calls == ["park", "unpark"]
    assert len(attempts) == 3


async def test_a_resumed_start_does_not_cast_over_another_app() -> None:
    device, listener, pipeline = DoubleDevice(), RecordingListener(), Pipeline()
    device.set(DeviceFacts(connected=True, app_id=YOUTUBE))
    cast_settings = settings(resume_after_s=0.5, park_after_s=60)
    casting = Casting(device, listener, cast_settings, Parking(pipeline.park, pipeline.unpark))
    try:
        await casting.show("http://agent/stream", "page", resumed=True)
        assert listener.waiting == ["taken_over"]
        await asyncio.sleep(1)
        assert device.shows == []  # YouTube runs: not cast over it
        device.set(DeviceFacts(connected=True, app_id="E8C28D3C", idle_screen=True))
        await listener.wait_until(lambda: listener.named(EventName.RECOVERED), within_s=5)
        assert len(device.shows) == 1
        assert listener.waiting == ["taken_over", None]
    finally:
        await casting.stop(handover=False)


async def test_a_start_command_casts_over_another_app() -> None:
    device, listener, pipeline = DoubleDevice(), RecordingListener(), Pipeline()
    device.set(DeviceFacts(connected=True, app_id=YOUTUBE))
    casting = Casting(device, listener, settings(), Parking(pipeline.park, pipeline.unpark))
    try:
        await casting.show("http://agent/stream", "page")  # someone asked for it just now
        assert len(device.shows) == 1
        assert listener.waiting == []
    finally:
        await casting.stop(handover=False)


async def test_another_senders_media_ending_in_the_media_receiver_is_idle() -> None:
    device, listener, pipeline = DoubleDevice(), RecordingListener(), Pipeline()
    casting = Casting(
        device, listener, settings(resume_after_s=0.5), Parking(pipeline.park, pipeline.unpark)
    )
    await casting.show("http://agent/stream", "page")
    try:
        theirs = replace(OURS, ours=False, content_id="http://phone/movie.mp4")
        device.set(theirs)
        await listener.wait_until(lambda: listener.waiting == ["taken_over"], within_s=5)
        await asyncio.sleep(1)
        assert len(device.shows) == 1  # their movie plays: never cast over it
        device.set(replace(theirs, player_state="IDLE", idle_reason="FINISHED"))
        await listener.wait_until(lambda: listener.named(EventName.RECOVERED), within_s=5)
        assert len(device.shows) == 2
    finally:
        await casting.stop(handover=False)


async def test_our_media_stopped_by_another_sender_waits_for_the_idle_screen() -> None:
    device, listener, pipeline = DoubleDevice(), RecordingListener(), Pipeline()
    casting = Casting(
        device, listener, settings(resume_after_s=0.5), Parking(pipeline.park, pipeline.unpark)
    )
    await casting.show("http://agent/stream", "page")
    try:
        device.set(replace(device.facts, player_state="IDLE", idle_reason="CANCELLED"))
        await listener.wait_until(lambda: listener.waiting == ["taken_over"], within_s=5)
        await asyncio.sleep(1.5)
        assert len(device.shows) == 1  # someone asked our stream off: not straight back
        device.set(DeviceFacts(connected=True, app_id="E8C28D3C", idle_screen=True))
        await listener.wait_until(lambda: listener.named(EventName.RECOVERED), within_s=5)
        assert len(device.shows) == 2
    finally:
        await casting.stop(handover=False)
