"""Issue 10 end to end: the agent as ``pagecast run`` runs it (real mosquitto, Chromium on
Xvfb, ffmpeg, HTTP, the webhook) casting to the fake device, which pulls the stream like a
receiver. What the device shows is read from the segments it pulled."""

from __future__ import annotations

import json
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from fakecast import FakeCastDevice
from support.agent import AUTH, TOKEN, real_agent
from support.media import average_rgb, close_to
from support.mqtt import Probe, free_port
from support.pages import PageServer, page_server  # noqa: F401 (fixture)
from test_homeassistant import HomeAssistantClient

from agent.config import Settings

RGB = tuple[int, int, int]
RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)
CAST = {"connect_timeout": 3, "play_timeout": 20, "discovery_timeout": 5, "mdns": False}
SMALL = {"width": 320, "height": 180, "fps": 15, "bitrate_kbps": 400}


@dataclass
class SceneRig:
    mqtt: Probe
    root: str
    tv: FakeCastDevice
    pages: PageServer
    http: aiohttp.ClientSession
    base: str  # the webhook
    ha: HomeAssistantClient | None = None

    async def command(self, name: str, payload: Any = b"") -> Any:
        return await self.mqtt.command(self.root, name, payload, within=60)

    async def post(self, name: str, payload: Any = None) -> Any:
        async with self.http.post(f"{self.base}/{name}", json=payload, headers=AUTH) as reply:
            return await reply.json()

    async def status(
        self, predicate: Callable[[Any], bool], *, since: int = 0, within: float = 30
    ) -> Any:
        return await self.mqtt.wait_json(
            f"{self.root}/status", predicate, since=since, within=within
        )

    async def event(self, name: str, *, since: int = 0, within: float = 30) -> Any:
        return await self.mqtt.wait_json(
            f"{self.root}/event", lambda e: e.get("event") == name, since=since, within=within
        )

    async def showing(self, colour: RGB, *, within: float = 20) -> None:
        """Until the newest segment the device pulled shows ``colour``."""
        await self.tv.wait_for(
            lambda: (
                bool(self.tv.log.segments)
                and close_to(average_rgb(self.tv.log.segments[-1][1]), colour)
            ),
            within_s=within,
        )

    def playing_throughout(self) -> bool:
        """The device went to PLAYING once and never left it."""
        states = [state for state, _ in self.tv.player_history]
        return "PLAYING" in states and all(
            s == "PLAYING" for s in states[states.index("PLAYING") :]
        )


@pytest.fixture
def scene_rig(
    agent_settings: Callable[..., Settings],
    fake_tv: FakeCastDevice,
    page_server: PageServer,  # noqa: F811
) -> Callable[..., Any]:
    @asynccontextmanager
    async def run(scenes: dict[str, Any] | None = None) -> AsyncIterator[SceneRig]:
        """The agent with the webhook and Home Assistant discovery on."""
        port = free_port()
        settings = agent_settings(
            cast={**CAST, "device": fake_tv.host},
            stream={"http_port": port, "default_quality": "small"},
            qualities={"small": SMALL},
            snapshot={"enabled": False},
            api={"enabled": True, "token": TOKEN},
            scenes=scenes or {},
            homeassistant={"enabled": True},
        )
        async with (
            real_agent(settings, also_watch=["homeassistant/#"]) as mqtt,
            aiohttp.ClientSession() as http,
        ):
            base = f"http://127.0.0.1:{port}"
            rig = SceneRig(mqtt, settings.topic_root, fake_tv, page_server, http, base)
            rig.ha = HomeAssistantClient(mqtt, settings)
            yield rig

    return run


async def test_a_doorbell_interrupt_goes_back_in_place(
    scene_rig: Callable[..., Any],
    page_server: PageServer,  # noqa: F811
) -> None:
    doorbell = {"url": page_server.color("00ff00"), "duration": 8, "revert": True}
    async with scene_rig({"doorbell": doorbell}) as r:
        base = await r.command("start", {"url": r.pages.color("ff0000")})
        assert base["ok"], base
        await r.status(lambda s: s["player_state"] == "PLAYING")
        await r.showing(RED)

        since = r.mqtt.mark()
        rung = await r.command("scene", "doorbell")
        assert rung["ok"], rung
        interrupted = await r.event("interrupted", since=since)
        assert interrupted["previous_session_id"] == base["session_id"]
        assert interrupted["in_place"] is True
        status = await r.status(lambda s: s["session_id"] == rung["session_id"])
        assert status["scene"] == "doorbell"
        assert status["revert_to"]["url"] == r.pages.color("ff0000")
        assert status["revert_to"]["session_id"] == base["session_id"]
        await r.showing(GREEN)

        reverted = await r.event("reverted", since=since, within=30)
        assert reverted["session_id"] == base["session_id"]
        assert reverted["in_place"] is True
        status = await r.status(lambda s: s["session_id"] == base["session_id"], since=since)
        assert status["revert_to"] is None
        assert (status["state"], status["url"]) == ("streaming", r.pages.color("ff0000"))
        await r.showing(RED)
        assert len(r.tv.loads) == 1
        assert r.playing_throughout(), r.tv.player_history


async def test_a_newer_interrupt_returns_to_the_same_base(scene_rig: Callable[..., Any]) -> None:
    async with scene_rig() as r:
        base = await r.post("start", {"url": r.pages.color("ff0000")})
        assert base["ok"], base
        await r.status(lambda s: s["player_state"] == "PLAYING")
        since = r.mqtt.mark()
        first = await r.post(
            "start", {"url": r.pages.color("00ff00"), "duration": 60, "revert": True}
        )
        assert first["ok"], first
        await r.showing(GREEN)
        second = await r.post(
            "start", {"url": r.pages.color("0000ff"), "duration": 4, "revert": True}
        )
        assert second["ok"], second
        status = await r.status(lambda s: s["session_id"] == second["session_id"])
        assert status["revert_to"]["session_id"] == base["session_id"]
        await r.showing(BLUE)
        reverted = await r.event("reverted", since=since, within=30)
        assert reverted["previous_session_id"] == second["session_id"]
        await r.showing(RED)
        assert len(r.tv.loads) == 1
        assert r.playing_throughout(), r.tv.player_history


async def test_a_rotation_changes_pages_without_a_blank_frame(
    scene_rig: Callable[..., Any],
) -> None:
    async with scene_rig() as r:
        urls = [r.pages.color(c) for c in ("ff0000", "00ff00", "0000ff")]
        started = await r.post("start", {"urls": urls, "rotate_s": 3})
        assert started["ok"], started
        status = await r.status(lambda s: s["player_state"] == "PLAYING")
        assert (status["urls"], status["rotate_s"], status["index"]) == (urls, 3, 0)
        since = r.mqtt.mark()
        for index in (1, 2, 0, 1):
            status = await r.status(lambda s, i=index: s["index"] == i, since=since, within=15)  # type: ignore[misc]
            assert status["url"] == urls[index]
            since = r.mqtt.mark()
        await r.showing(GREEN)
        assert len(r.tv.loads) == 1
        assert r.playing_throughout(), r.tv.player_history
        pulled = [body for _, body in r.tv.log.segments]
        seen = colours_in(pulled)
        assert {RED, GREEN, BLUE} <= set(seen), seen
        strays = [c for c in frame_colours(pulled) if c not in (RED, GREEN, BLUE)]
        assert strays == [], f"frames that are none of the pages: {strays[:5]}"


async def test_a_failing_page_is_skipped_and_next_shows_now(
    scene_rig: Callable[..., Any],
) -> None:
    async with scene_rig() as r:
        urls = [r.pages.color("ff0000"), r.pages.url("/status/500"), r.pages.color("0000ff")]
        since = r.mqtt.mark()
        # Pages due only every 60 s: every change below is cmd/next's.
        started = await r.command("start", {"urls": urls, "rotate_s": 60})
        assert started["ok"], started
        await r.status(lambda s: s["player_state"] == "PLAYING", since=since)
        error = await r.event("page_error", since=since, within=30)
        assert (error["index"], error["url"]) == (1, urls[1])
        assert "HTTP 500" in error["reason"]
        for index, colour in ((2, BLUE), (0, RED)):
            moved = r.mqtt.mark()
            assert (await r.command("next"))["ok"]
            status = await r.status(lambda s, i=index: s["index"] == i, since=moved)  # type: ignore[misc]
            assert status["url"] == urls[index]
            await r.showing(colour)
        shown = {m.json()["index"] for m in r.mqtt.messages(f"{r.root}/status", since=since)}
        assert shown == {0, 2}
        assert len(r.tv.loads) == 1


async def test_reload_loads_the_page_again_in_place(scene_rig: Callable[..., Any]) -> None:
    async with scene_rig() as r:
        flip = r.pages.url("/flip/ff0000/00ff00")
        assert (await r.command("start", {"url": flip}))["ok"]
        await r.status(lambda s: s["player_state"] == "PLAYING")
        await r.showing(RED)
        assert (await r.post("reload"))["ok"]
        await r.showing(GREEN)
        assert (await r.command("reload", {"id": "again"}))["ok"]
        await r.showing(RED)
        assert len(r.tv.loads) == 1


def frame_colours(segments: list[bytes], size: int = 4) -> list[RGB]:
    """Each decoded frame's blocks (``size``x``size``), snapped to a pure colour when close to
    one of red/green/blue, else as they are: a torn or blank frame shows as a stray."""
    out: list[RGB] = []
    for body in segments:
        raw = subprocess.run(
            [
                *("ffmpeg", "-v", "error", "-i", "pipe:0"),
                *("-vf", f"scale={size}:{size}:flags=area"),
                *("-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"),
            ],
            input=body,
            capture_output=True,
            check=True,
            timeout=30,
        ).stdout
        for at in range(0, len(raw) - 2, 3):
            block = (raw[at], raw[at + 1], raw[at + 2])
            out.append(next((c for c in (RED, GREEN, BLUE) if close_to(block, c, 60)), block))
    return out


def colours_in(segments: list[bytes]) -> list[RGB]:
    return [c for c in frame_colours(segments) if c in (RED, GREEN, BLUE)]


async def test_an_interrupt_over_a_rotation_resumes_the_rotation(
    scene_rig: Callable[..., Any],
) -> None:
    async with scene_rig() as r:
        urls = [r.pages.color("ff0000"), r.pages.color("00ff00")]
        rotation = await r.command("start", {"urls": urls, "rotate_s": 3})
        assert rotation["ok"], rotation
        await r.status(lambda s: s["player_state"] == "PLAYING")
        since = r.mqtt.mark()
        doorbell = {"url": r.pages.color("0000ff"), "duration": 5, "revert": True}
        assert (await r.post("start", doorbell))["ok"]
        status = await r.status(lambda s: s["url"] == doorbell["url"], since=since)
        assert status["urls"] is None
        assert status["revert_to"]["urls"] == urls
        await r.showing(BLUE)
        await r.event("reverted", since=since, within=30)
        back = r.mqtt.mark()
        # The rotation takes turns again, from its first page, in the same stream.
        for index in (0, 1):
            await r.status(lambda s, i=index: s["index"] == i and s["urls"] == urls, since=back)  # type: ignore[misc]
        await r.showing(GREEN)
        assert len(r.tv.loads) == 1
        assert r.playing_throughout(), r.tv.player_history


async def test_home_assistant_rings_the_doorbell_reloads_and_turns_pages(
    scene_rig: Callable[..., Any],
    page_server: PageServer,  # noqa: F811
) -> None:
    urls = [page_server.color("ff0000"), page_server.color("00ff00")]
    scenes = {
        "doorbell": {"url": page_server.color("0000ff"), "duration": 5, "revert": True},
        "tour": {"urls": urls, "rotate_s": 60},
    }
    async with scene_rig(scenes) as r:
        assert r.ha is not None
        components = (await r.ha.discover())["components"]
        assert components["scene"]["options"] == ["doorbell", "tour"]

        mark = await r.ha.set_value(components["scene"], "tour")
        await r.ha.status_where(lambda s: s["player_state"] == "PLAYING", mark)
        assert r.ha.state_of(components["scene"]) == "tour"
        await r.showing(RED)
        mark = await r.ha.press(components["next"])
        await r.ha.status_where(lambda s: s["index"] == 1, mark)
        await r.showing(GREEN)

        mark = await r.ha.set_value(components["scene"], "doorbell")
        status = await r.ha.status_where(lambda s: s["scene"] == "doorbell", mark)
        assert status["revert_to"]["scene"] == "tour"
        await r.showing(BLUE)
        await r.event("reverted", since=mark, within=30)
        await r.ha.status_where(lambda s: s["scene"] == "tour", mark)
        await r.showing(RED)  # the rotation again, from its first page

        mark = await r.ha.press(components["reload"])
        reloaded = await r.mqtt.wait_json(f"{r.root}/response/reload", since=mark)
        assert reloaded["ok"], reloaded
        assert len(r.tv.loads) == 1
        assert r.playing_throughout(), r.tv.player_history


async def test_volume_is_set_on_the_device_and_reported_back(
    scene_rig: Callable[..., Any],
) -> None:
    async with scene_rig() as r:
        assert (await r.command("start", {"url": r.pages.color("ff0000")}))["ok"]
        await r.status(lambda s: s["player_state"] == "PLAYING" and s["volume"] == 1.0)

        since = r.mqtt.mark()
        answer = await r.command("volume", {"level": 0.3})
        assert answer["ok"], answer
        await r.tv.wait_for(lambda: r.tv.volume_level == 0.3, within_s=10)
        await r.status(lambda s: s["volume"] == 0.3 and s["muted"] is False, since=since)

        # Changed with the TV's remote: the status follows what the device reports.
        since = r.mqtt.mark()
        r.tv.press_volume(level=0.55)
        await r.status(lambda s: s["volume"] == 0.55, since=since)

        # The webhook and Home Assistant's switch and slider set it too.
        since = r.mqtt.mark()
        assert (await r.post("volume", {"muted": True}))["ok"]
        await r.status(lambda s: s["muted"] is True and s["volume"] == 0.55, since=since)
        assert r.tv.muted is True
        assert r.ha is not None
        components = (await r.ha.discover())["components"]
        assert r.ha.state_of(components["mute"]) == components["mute"]["state_on"]
        mark = await r.ha.switch(components["mute"], on=False)
        await r.ha.status_where(lambda s: s["muted"] is False, mark)
        mark = await r.ha.set_value(components["volume"], "0.8")
        await r.ha.status_where(lambda s: s["volume"] == 0.8, mark)
        assert (r.tv.volume_level, r.tv.muted) == (0.8, False)
        assert r.ha.state_of(components["volume"]) == "0.8"

        # Matched by id: the answers to Home Assistant's commands may still be on their way.
        since = r.mqtt.mark()
        await r.mqtt.publish(f"{r.root}/cmd/volume", json.dumps({"level": 2, "id": "too-loud"}))
        refused = await r.mqtt.wait_json(
            f"{r.root}/response/volume", lambda a: a["id"] == "too-loud", since=since
        )
        assert refused["error"]["code"] == "INVALID_PAYLOAD"
        assert r.tv.volume_level == 0.8
        assert len(r.tv.loads) == 1
