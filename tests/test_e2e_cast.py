"""Issue 4's acceptance, end to end: MQTT commands to a real agent (real mosquitto, Chromium on
Xvfb, ffmpeg, HTTP) casting to the fake device, which pulls the stream like a receiver does."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import StartAgent
from fakecast import FakeCastDevice, free_loopback_address
from support.listener import RecordingListener
from support.media import average_rgb, close_to
from support.mqtt import Probe, probe
from support.pages import PageServer, page_server  # noqa: F401 (fixture)
from support.procs import named
from support.streaming import stream_settings, until

from agent.cast.manager import ChromecastManager
from agent.config import Settings
from agent.stream.backend import StreamBackend
from agent.supervisor.session import StreamRequest
from agent.supervisor.state import EventName

RED, GREEN = (255, 0, 0), (0, 255, 0)
CAST = {
    "connect_timeout": 3,
    "play_timeout": 20,
    "discovery_timeout": 5,
    "mdns": False,  # only the fake device: real ones on a developer's LAN must not count
}
SMALL = {"width": 640, "height": 360, "fps": 15, "bitrate_kbps": 600}
SMALLER = {"width": 480, "height": 270, "fps": 15, "bitrate_kbps": 400}


@dataclass
class CastRig:
    mqtt: Probe
    root: str
    tv: FakeCastDevice
    pages: PageServer

    async def start(self, **payload: Any) -> Any:
        return await self.mqtt.command(
            self.root, "start", {"quality": "small", **payload}, within=60
        )

    async def status(
        self, predicate: Callable[[Any], bool], *, since: int = 0, within: float = 30
    ) -> Any:
        return await self.mqtt.wait_json(
            f"{self.root}/status", predicate, since=since, within=within
        )

    async def event(self, name: str, *, since: int = 0, within: float = 30, **match: Any) -> Any:
        def wanted(event: Any) -> bool:
            return event.get("event") == name and all(event.get(k) == v for k, v in match.items())

        return await self.mqtt.wait_json(f"{self.root}/event", wanted, since=since, within=within)


@pytest.fixture
def rig(
    agent_settings: Callable[..., Settings],
    start_agent: StartAgent,
    fake_tv: FakeCastDevice,
    page_server: PageServer,  # noqa: F811
) -> Callable[..., Any]:
    @asynccontextmanager
    async def run(**cast: Any) -> AsyncIterator[CastRig]:
        settings = agent_settings(
            cast={**CAST, "device": fake_tv.host, **cast},
            stream={"http_port": 0, "default_quality": "small"},
            qualities={"small": SMALL, "smaller": SMALLER},
            snapshot={"enabled": False},
        )
        root = settings.topic_root
        async with (
            ChromecastManager(settings.cast) as cast_manager,
            StreamBackend(settings, cast_manager) as backend,
            start_agent(settings, backend.create_session),
            probe(settings.mqtt.port, f"{root}/#") as mqtt,
        ):
            yield CastRig(mqtt, root, fake_tv, page_server)

    return run


def latest_segment_colour(tv: FakeCastDevice) -> tuple[int, int, int]:
    return average_rgb(tv.log.segments[-1][1])


async def test_start_switch_stop(rig: Callable[..., Any]) -> None:
    async with rig() as r:
        response = await r.start(url=r.pages.color("ff0000"))
        assert response["ok"], response
        await r.tv.wait_for(lambda: r.tv.log.consecutive_segments() >= 5, within_s=30)
        assert r.tv.player_state == "PLAYING"
        assert r.tv.log.problems() == []
        status = await r.status(
            lambda s: s["state"] == "streaming" and s["player_state"] == "PLAYING"
        )
        assert status["device"] == "Fake TV"
        assert status["stream_url"] == r.tv.loads[0]["media"]["contentId"]
        assert close_to(latest_segment_colour(r.tv), RED)

        switched = await r.start(url=r.pages.color("00ff00"))
        assert switched["ok"], switched
        after = len(r.tv.log.segments)
        await r.tv.wait_for(
            lambda: (
                len(r.tv.log.segments) >= after + 3 and close_to(latest_segment_colour(r.tv), GREEN)
            ),
            within_s=20,
        )
        assert len(r.tv.loads) == 1  # the device kept playing the same stream
        assert r.tv.player_state == "PLAYING"

        since = r.mqtt.mark()
        stopped = await r.mqtt.command(r.root, "stop", within=30)
        assert stopped["ok"], stopped
        await r.status(lambda s: s["state"] == "idle", since=since)
        assert r.tv.app is None
        assert r.tv.stops == ["app"]
        assert named("ffmpeg") == []


async def test_a_new_quality_on_the_same_tv_keeps_the_receiver(rig: Callable[..., Any]) -> None:
    async with rig() as r:
        first = await r.start(url=r.pages.color("ff0000"))
        await r.status(
            lambda s: s["session_id"] == first["session_id"] and s["state"] == "streaming"
        )
        second = await r.start(url=r.pages.color("00ff00"), quality="smaller")
        assert second["ok"], second
        await r.status(
            lambda s: (
                s["session_id"] == second["session_id"]
                and s["state"] == "streaming"
                and s["player_state"] == "PLAYING"
            )
        )
        # A new pipeline, so a new LOAD, but our receiver was never quit in between.
        assert len(r.tv.loads) == 2
        assert r.tv.stops == []
        assert r.tv.app is not None
        await r.tv.wait_for(lambda: close_to(latest_segment_colour(r.tv), GREEN), within_s=20)

        # The receiver kept for a successor that then fails is not left on a dead stream.
        since = r.mqtt.mark()
        third = await r.start(url=r.pages.url("/status/404"), quality="small")
        assert third["ok"], third
        failed = await r.status(lambda s: s["state"] == "error", since=since)
        assert failed["error"]["code"] == "PAGE_LOAD_FAILED"
        await r.tv.wait_for(lambda: r.tv.app is None, within_s=10)
        assert r.tv.stops == ["app"]


async def test_friendly_name_through_known_hosts(
    rig: Callable[..., Any], fake_tv: FakeCastDevice
) -> None:
    async with rig(device="Fake TV", known_hosts=[fake_tv.host]) as r:
        response = await r.start(url=r.pages.color("0000ff"))
        assert response["ok"], response
        status = await r.status(lambda s: s["player_state"] == "PLAYING")
        assert status["device"] == "Fake TV"


async def test_reboot_and_idle_close_are_recovered(rig: Callable[..., Any]) -> None:
    async with rig() as r:
        assert (await r.start(url=r.pages.color("ff0000")))["ok"]
        await r.status(lambda s: s["player_state"] == "PLAYING")

        since = r.mqtt.mark()
        await r.tv.reboot(down_s=3)
        back = r.mqtt.mark()
        lost = await r.event("device_lost", since=since)
        assert lost["reason"] == "connection_lost"
        # The status says so too: nothing of ours is known to play while the device is away.
        await r.status(
            lambda s: (
                s["state"] == "waiting"
                and s["reason"] == "device_away"
                and s["player_state"] is None
            ),
            since=since,
        )
        recovered = await r.event("recovered", since=back, within=15)
        assert recovered["after_s"] >= 3
        await r.status(
            lambda s: (
                s["state"] == "streaming" and s["reason"] is None and s["player_state"] == "PLAYING"
            ),
            since=back,
        )
        assert len(r.tv.loads) == 2

        since = r.mqtt.mark()
        await r.tv.close_app()
        await r.event("recovered", since=since, reason="app_closed", within=20)
        assert r.tv.launches.count("CC1AD845") == 3
        await r.tv.wait_for(lambda: r.tv.player_state == "PLAYING", within_s=10)


async def test_another_sender_taking_over_is_respected(rig: Callable[..., Any]) -> None:
    async with rig(on_takeover="respect") as r:
        assert (await r.start(url=r.pages.color("ff0000")))["ok"]
        await r.status(lambda s: s["player_state"] == "PLAYING")
        since = r.mqtt.mark()
        await r.tv.other_sender_load()
        await r.event("device_lost", since=since, reason="taken_over")
        await r.event("stopped", since=since, reason="taken_over")
        await r.status(lambda s: s["state"] == "idle", since=since)
        assert r.tv.stops == []  # their media is left alone
        assert r.tv.player_state == "PLAYING"
        assert named("ffmpeg") == []


async def test_unreachable_device_and_load_failed(rig: Callable[..., Any]) -> None:
    async with rig() as r:
        # A start is answered when accepted; how it went shows in the event and the status.
        since = r.mqtt.mark()
        assert (await r.start(url=r.pages.color("ff0000"), device=free_loopback_address()))["ok"]
        # Bounded by cast.connect_timeout, with room for the pipeline started alongside.
        failed = await r.event("failed", since=since, within=CAST["connect_timeout"] + 10)
        assert failed["error"]["code"] == "DEVICE_UNREACHABLE", failed
        status = await r.status(lambda s: s["state"] == "error", since=since)
        assert status["error"]["code"] == "DEVICE_UNREACHABLE"
        assert named("ffmpeg") == []

        r.tv.fail_next_load(104)
        since = r.mqtt.mark()
        assert (await r.start(url=r.pages.color("ff0000")))["ok"]
        failed = await r.event("failed", since=since, within=30)
        assert failed["error"]["code"] == "CAST_FAILED", failed
        assert "LOAD_FAILED 104" in failed["error"]["message"]
        await r.status(lambda s: s["state"] == "error", since=since)
        assert named("ffmpeg") == []


async def test_duration_expiry_quits_the_app(rig: Callable[..., Any]) -> None:
    async with rig() as r:
        since = r.mqtt.mark()
        assert (await r.start(url=r.pages.color("ff0000"), duration=8))["ok"]
        await r.status(lambda s: s["player_state"] == "PLAYING")
        await r.event("finished", since=since, within=20)
        await r.status(lambda s: s["state"] == "idle", since=since)
        await r.tv.wait_for(lambda: r.tv.app is None, within_s=5)
        assert r.tv.stops == ["app"]


async def test_a_tv_away_is_waited_for_parked_and_cast_again(rig: Callable[..., Any]) -> None:
    async with rig(park_after_s=2) as r:
        assert (await r.start(url=r.pages.color("ff0000")))["ok"]
        before = await r.status(lambda s: s["player_state"] == "PLAYING")
        since = r.mqtt.mark()
        await r.tv.go_away()
        await r.event("device_lost", since=since, reason="connection_lost")
        waiting = await r.status(
            lambda s: s["state"] == "waiting" and s["reason"] == "device_away", since=since
        )
        assert waiting["stream_url"] == before["stream_url"]
        # Parked after park_after_s: no encoder burning CPU for a TV that is off.
        await until(lambda: named("ffmpeg") == [], within=20)
        await asyncio.sleep(4)
        assert r.tv.away
        assert named("ffmpeg") == []

        back = r.mqtt.mark()
        await r.tv.come_back()  # to its Backdrop, like a TV switched on
        recovered = await r.event("recovered", since=back, within=45)
        assert recovered["reason"] == "connection_lost"
        assert recovered["after_s"] >= 6
        after = await r.status(
            lambda s: s["state"] == "streaming" and s["player_state"] == "PLAYING", since=back
        )
        for key in ("url", "quality", "stream_url", "session_id", "device"):
            assert after[key] == before[key], key
        assert after["reason"] is None
        assert named("ffmpeg")
        assert r.tv.loads[-1]["media"]["contentId"] == before["stream_url"]
        seen = len(r.tv.log.segments)
        await r.tv.wait_for(
            lambda: (
                len(r.tv.log.segments) >= seen + 3 and close_to(latest_segment_colour(r.tv), RED)
            ),
            within_s=30,
        )


async def test_a_takeover_is_outlived_then_resumed(rig: Callable[..., Any]) -> None:
    async with rig(resume_after_s=2) as r:
        assert (await r.start(url=r.pages.color("00ff00")))["ok"]
        before = await r.status(lambda s: s["player_state"] == "PLAYING")
        since = r.mqtt.mark()
        await r.tv.other_app("233637DE", "YouTube")
        await r.event("device_lost", since=since, reason="taken_over")
        await r.status(
            lambda s: s["state"] == "waiting" and s["reason"] == "taken_over", since=since
        )
        launches, loads = len(r.tv.launches), len(r.tv.loads)
        await asyncio.sleep(6)  # YouTube runs: we never relaunch over it
        assert (len(r.tv.launches), len(r.tv.loads)) == (launches, loads)
        assert r.tv.app is not None
        assert r.tv.app.app_id == "233637DE"

        back = r.mqtt.mark()
        await r.tv.other_app_ends()  # back to Backdrop
        recovered = await r.event("recovered", since=back, reason="taken_over", within=30)
        assert recovered["after_s"] >= 8
        after = await r.status(
            lambda s: s["state"] == "streaming" and s["player_state"] == "PLAYING", since=back
        )
        assert (after["url"], after["stream_url"]) == (before["url"], before["stream_url"])
        assert len(r.tv.loads) == loads + 1
        seen = len(r.tv.log.segments)
        await r.tv.wait_for(
            lambda: (
                len(r.tv.log.segments) >= seen + 3 and close_to(latest_segment_colour(r.tv), GREEN)
            ),
            within_s=30,
        )


async def test_a_resumed_wish_waits_for_a_device_away_at_start(
    tmp_path: Path,
    page_server: PageServer,  # noqa: F811
    fake_tv: FakeCastDevice,
) -> None:
    # The wish came back after a restart while the TV is off: nobody waits for an answer, so
    # the session starts, waits for the device (parked meanwhile) and casts once it is back.
    await fake_tv.go_away()
    settings = stream_settings(
        tmp_path,
        cast={**CAST, "device": fake_tv.host, "park_after_s": 1},
        qualities={"small": SMALL},
        stream={"default_quality": "small"},
        snapshot={"enabled": False},
    )
    listener = RecordingListener()
    request = StreamRequest(url=page_server.color("0000ff"), quality="small", resumed=True)
    async with (
        ChromecastManager(settings.cast) as cast_manager,
        StreamBackend(settings, cast_manager) as backend,
    ):
        session = backend.create_session("s1", request, listener)
        try:
            await session.start()
            assert listener.waiting == ["device_away"]
            assert listener.endings == []
            await until(lambda: named("ffmpeg") == [], within=20)  # parked

            await fake_tv.come_back()
            await listener.wait_until(lambda: listener.named(EventName.RECOVERED), within_s=60)
            assert listener.waiting == ["device_away", None]
            await fake_tv.wait_for(lambda: fake_tv.player_state == "PLAYING", within_s=20)
            assert fake_tv.loads[-1]["media"]["contentId"] == listener.stream_urls[-1]
            assert listener.player_states[-1] == "PLAYING"
        finally:
            await session.stop()
    assert named("ffmpeg") == []
