"""Issue 8's power-cut case from outside: the agent and the page server die together; the agent
comes back first (same state_dir), resumes the wish, waits for the page without giving up, and
the TV shows the page again once the server answers."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

import pytest
from fakecast import FakeCastDevice
from support.agent_process import agent_process, write_config
from support.media import average_rgb, close_to, media_playlist, media_playlist_url
from support.mqtt import Mosquitto, probe
from support.pages import PageServer
from support.streaming import until_async

pytestmark = pytest.mark.timeout(180)

ORANGE = (255, 136, 0)
SERVER_DOWN_S = 20


async def _shows(stream_url: str, rgb: tuple[int, int, int]) -> bool:
    media_url = await asyncio.to_thread(media_playlist_url, stream_url)
    playlist = await asyncio.to_thread(media_playlist, media_url)
    try:
        return close_to(await asyncio.to_thread(average_rgb, playlist.segments[-1]), rgb)
    except subprocess.CalledProcessError:
        return False  # slid out of the window meanwhile


async def test_agent_and_page_server_die_together_and_the_page_comes_back(
    mosquitto: Mosquitto, tmp_path: Path, fake_tv: FakeCastDevice
) -> None:
    cast = {"device": fake_tv.host, "mdns": False, "connect_timeout": 5, "play_timeout": 30}
    config = write_config(tmp_path, mosquitto.port, cast=cast)
    root = config.root
    with PageServer() as pages:
        url = pages.color("ff8800")
        async with probe(mosquitto.port, f"{root}/#") as mqtt:
            async with agent_process(config) as first:
                await mqtt.wait_for(
                    f"{root}/availability", lambda m: m.payload == b"online", within=30
                )
                started = await mqtt.command(root, "start", {"url": url}, within=60)
                assert started["ok"], started
                await mqtt.wait_json(
                    f"{root}/status",
                    lambda s: s["state"] == "streaming" and s["player_state"] == "PLAYING",
                    within=90,
                )
                # The power cut: both go at once.
                first.kill()
                pages.down()
                await first.wait()
            since = mqtt.mark()
            async with agent_process(config) as second:
                resumed = await mqtt.wait_json(
                    f"{root}/event", lambda e: e["event"] == "resumed", since=since, within=60
                )
                assert resumed["url"] == url
                waiting = await mqtt.wait_json(
                    f"{root}/status",
                    lambda s: s["state"] == "waiting" and s["reason"] == "page_unreachable",
                    since=since,
                    within=60,
                )
                # The fresh agent says idle once before it resumes; from waiting on, the wish
                # must stand however long the outage lasts.
                outage = mqtt.mark()
                await asyncio.sleep(SERVER_DOWN_S)
                states = {m.json()["state"] for m in mqtt.messages(f"{root}/status", since=outage)}
                assert not states & {"idle", "error"}, states

                back = mqtt.mark()
                returned = time.monotonic()
                pages.up()
                status = await mqtt.wait_json(
                    f"{root}/status",
                    lambda s: s["state"] == "streaming" and s["player_state"] == "PLAYING",
                    since=back,
                    within=45,
                )
                assert (status["url"], status["stream_url"]) == (url, waiting["stream_url"])
                # On screen means in the pictures the TV pulls, not only in the status.
                left = 45 - (time.monotonic() - returned)
                await until_async(lambda: _shows(status["stream_url"], ORANGE), within=left)
                print(f"\npage on the TV {time.monotonic() - returned:.1f} s after its server")
                assert fake_tv.player_state == "PLAYING"
                second.terminate()
                assert await asyncio.wait_for(second.wait(), 10) == 0
