"""Weeks of Chromium, compressed: the browser is recycled under a playing Cast device (the fake
one, pulling the stream like a receiver) with no new LOAD, no stall, continuous numbering and
no blank frame in the segments around the switch."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable

import pytest
from conftest import StartAgent
from fakecast import FakeCastDevice
from support.media import close_to, frame_colours
from support.mqtt import probe
from support.pages import PageServer
from support.procs import named

from agent.cast.manager import ChromecastManager
from agent.config import Settings
from agent.stream.backend import StreamBackend

pytestmark = pytest.mark.timeout(240)

RED = (255, 0, 0)
SMALL = {"width": 640, "height": 360, "fps": 15, "bitrate_kbps": 600}
CAST = {"connect_timeout": 5, "play_timeout": 30, "discovery_timeout": 5, "mdns": False}
# 0.006 h = 21.6 s after the (warm) browser started: the first recycle comes while the
# device plays, the second long after the checks.
RECYCLE_AFTER_H = 0.006


async def test_a_recycled_browser_takes_over_unseen(
    agent_settings: Callable[..., Settings],
    start_agent: StartAgent,
    fake_tv: FakeCastDevice,
    page_server: PageServer,
) -> None:
    settings = agent_settings(
        cast={**CAST, "device": fake_tv.host},
        stream={"http_port": 0, "default_quality": "small"},
        qualities={"small": SMALL},
        snapshot={"enabled": False},
        browser={"recycle_after_h": RECYCLE_AFTER_H},
    )
    root = settings.topic_root
    async with (
        ChromecastManager(settings.cast) as cast,
        StreamBackend(settings, cast) as backend,
        start_agent(settings, backend.create_session),
        probe(settings.mqtt.port, f"{root}/#") as mqtt,
    ):
        since = mqtt.mark()
        await mqtt.command(root, "start", {"url": page_server.color("ff0000")})
        playing = await mqtt.wait_json(
            f"{root}/status", lambda s: s["player_state"] == "PLAYING", since=since, within=60
        )
        browsers = {p.pid for p in named("chrom") if "--type=" not in p.cmdline}

        recycled = await mqtt.wait_json(
            f"{root}/event", lambda e: e["event"] == "recycled", since=since, within=90
        )
        assert recycled["session_id"] == playing["session_id"]
        assert recycled["after_h"] >= RECYCLE_AFTER_H
        # A new browser on a new display; the old ones are gone.
        now = {p.pid for p in named("chrom") if "--type=" not in p.cmdline}
        assert now
        assert not now & browsers
        assert len(named("Xvfb")) == 1
        fetched = len(fake_tv.log.segment_fetches())
        await fake_tv.wait_for(lambda: len(fake_tv.log.segment_fetches()) >= fetched + 4, 20)
        # The device never noticed: one LOAD, PLAYING throughout, every segment in order.
        assert len(fake_tv.loads) == 1
        states = [state for state, _ in fake_tv.player_history]
        assert states[states.index("PLAYING") :] == ["PLAYING"], fake_tv.player_history
        sequences = [f.sequence for f in fake_tv.log.segment_fetches()]
        assert sequences == list(range(sequences[0], sequences[0] + len(sequences)))
        assert fake_tv.log.problems() == []
        fetched_at = [f.at for f in fake_tv.log.segment_fetches()]
        gap = max(b - a for a, b in itertools.pairwise(fetched_at))
        print(f"\nlongest wait for the next segment at the player: {gap:.2f} s")
        # Every frame of the segments around the switch shows the page, none a blank window.
        for sequence, body in fake_tv.log.segments:
            colours = await asyncio.to_thread(frame_colours, body)
            assert colours
            blank = [c for c in colours if not close_to(c, RED)]
            assert not blank, (sequence, blank)
