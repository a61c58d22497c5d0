"""The pipeline end to end through MQTT: a real broker, the real agent, the real pipeline."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import StartAgent
from support.media import average_rgb, close_to, fetch, media_playlist, media_playlist_url
from support.mqtt import probe
from support.pages import PageServer
from support.procs import named
from support.streaming import NoDevice, until_async

from agent.config import Settings
from agent.stream.backend import StreamBackend


async def shows(master_url: str, rgb: tuple[int, int, int]) -> bool:
    media = await asyncio.to_thread(media_playlist_url, master_url)
    newest = (await asyncio.to_thread(media_playlist, media)).segments[-1]
    try:
        return close_to(await asyncio.to_thread(average_rgb, newest), rgb)
    except subprocess.CalledProcessError:
        return False  # slid out of the window meanwhile


async def test_start_switch_heal_fail_and_stop_through_mqtt(
    tmp_path: Path,
    page_server: PageServer,
    agent_settings: Callable[..., Settings],
    start_agent: StartAgent,
) -> None:
    settings = agent_settings(
        stream={"http_port": 0, "work_dir": str(tmp_path)},
        mqtt={"heartbeat_interval": 1},
    )
    root = settings.topic_root
    async with (
        StreamBackend(settings, NoDevice()) as backend,
        start_agent(settings, backend.create_session),
        probe(settings.mqtt.port, f"{root}/#") as mqtt,
    ):
        mark = mqtt.mark()
        response = await mqtt.command(root, "start", {"url": page_server.color("ff0000")})
        assert response["ok"] is True
        streaming = await mqtt.wait_json(
            f"{root}/status", lambda s: s["state"] == "streaming", since=mark, within=20
        )
        url = streaming["stream_url"]
        assert streaming["title"] == "color ff0000"
        assert (await asyncio.to_thread(fetch, url)).status == 200
        assert await shows(url, (255, 0, 0))

        def has_figures(beat: dict[str, Any]) -> bool:
            return bool(beat.get("stream") and (beat["stream"].get("fps") or 0) > 0)

        await mqtt.wait_json(f"{root}/heartbeat", has_figures, since=mark, within=10)

        # Same quality and device: switched in place on the same URL.
        mark = mqtt.mark()
        await mqtt.command(root, "start", {"url": page_server.color("0000ff")})
        replaced = await mqtt.wait_json(
            f"{root}/event", lambda e: e["event"] == "replaced", since=mark, within=20
        )
        assert replaced["in_place"] is True
        status = await mqtt.wait_json(
            f"{root}/status",
            lambda s: s["url"] == page_server.color("0000ff") and s["state"] == "streaming",
            since=mark,
        )
        assert status["stream_url"] == url

        async def blue() -> bool:
            return await shows(url, (0, 0, 255))

        await until_async(blue, within=10)

        # ffmpeg dies: the stream heals and says so.
        mark = mqtt.mark()
        [ffmpeg] = named("ffmpeg")
        os.kill(ffmpeg.pid, signal.SIGKILL)
        recovered = await mqtt.wait_json(
            f"{root}/event", lambda e: e["event"] == "recovered", since=mark, within=20
        )
        assert recovered["reason"]
        assert (await asyncio.to_thread(fetch, url)).status == 200

        # A page that does not load: an error with the reason, nothing streams.
        mark = mqtt.mark()
        await mqtt.command(
            root, "start", {"url": page_server.url("/status/404"), "quality": "480p"}
        )
        failed = await mqtt.wait_json(
            f"{root}/status", lambda s: s["state"] == "error", since=mark, within=20
        )
        assert failed["error"]["code"] == "PAGE_LOAD_FAILED"
        assert "HTTP 404" in failed["error"]["message"]
        assert (await asyncio.to_thread(fetch, url)).status == 404
        assert not named("ffmpeg")

        mark = mqtt.mark()
        await mqtt.command(root, "start", {"url": page_server.color("00ff00")})
        await mqtt.wait_json(
            f"{root}/status", lambda s: s["state"] == "streaming", since=mark, within=20
        )
        mark = mqtt.mark()
        await mqtt.command(root, "stop")
        await mqtt.wait_json(f"{root}/status", lambda s: s["state"] == "idle", since=mark)
        assert not named("ffmpeg")
        assert not await asyncio.to_thread(lambda: list(tmp_path.glob("*/session-*")))
    assert not named("chrom")
    assert not named("Xvfb")
