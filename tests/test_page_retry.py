"""A page whose server is down is waited for, not failed; a switch never costs the stream.

Real broker, real agent, real pipeline (Xvfb, Chromium, ffmpeg, HTTP), through MQTT; the page
server is stopped and started again on the same port.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from conftest import StartAgent
from support.media import average_rgb, close_to, media_playlist, media_playlist_url
from support.mqtt import Probe, probe
from support.pages import PageServer
from support.procs import chromium_browser
from support.streaming import NoDevice, until_async

from agent.config import Settings
from agent.stream.backend import StreamBackend
from agent.stream.session import PipelineSession
from agent.supervisor.session import SessionListener, StreamRequest

pytestmark = pytest.mark.timeout(240)

TINY = {"width": 320, "height": 180, "fps": 10, "bitrate_kbps": 300}
RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)
SERVER_DOWN_S = 25


async def shows(master_url: str, rgb: tuple[int, int, int]) -> bool:
    """The newest segment of the stream is (mostly) ``rgb``."""
    try:
        media = await asyncio.to_thread(media_playlist_url, master_url)
        newest = (await asyncio.to_thread(media_playlist, media)).segments[-1]
        return close_to(await asyncio.to_thread(average_rgb, newest), rgb)
    except (subprocess.CalledProcessError, StopIteration, IndexError):
        return False  # slid out of the window meanwhile


@asynccontextmanager
async def agent(
    tmp_path: Path,
    agent_settings: Callable[..., Settings],
    start_agent: StartAgent,
    *,
    resumed: bool = False,
    **stream: Any,
) -> AsyncIterator[tuple[Probe, str]]:
    settings = agent_settings(
        stream={
            "http_port": 0,
            "work_dir": str(tmp_path),
            "default_quality": "tiny",
            "page_load_timeout_s": 5,
            **stream,
        },
        qualities={"tiny": TINY},
        snapshot={"enabled": False},
    )
    root = settings.topic_root
    async with StreamBackend(settings, NoDevice()) as backend:

        def resumed_session(
            session_id: str, request: StreamRequest, listener: SessionListener
        ) -> PipelineSession:
            # What the persisted wish hands the pipeline after a restart (agent/wish.py).
            return backend.create_session(
                session_id, dataclasses.replace(request, resumed=True), listener
            )

        factory = resumed_session if resumed else backend.create_session
        async with start_agent(settings, factory), probe(settings.mqtt.port, f"{root}/#") as mqtt:
            yield mqtt, root


async def test_a_resumed_wish_waits_for_its_page_server(
    tmp_path: Path, agent_settings: Callable[..., Settings], start_agent: StartAgent
) -> None:
    with PageServer() as pages:
        url = pages.color("00ff00")
        pages.down()
        async with agent(tmp_path, agent_settings, start_agent, resumed=True) as (mqtt, root):
            since = mqtt.mark()
            assert (await mqtt.command(root, "start", {"url": url}))["ok"]
            error = await mqtt.wait_json(
                f"{root}/event", lambda e: e["event"] == "page_error", since=since, within=60
            )
            assert "connection refused" in error["error"]
            waiting = await mqtt.wait_json(
                f"{root}/status", lambda s: s["state"] == "waiting", since=since, within=60
            )
            assert waiting["reason"] == "page_unreachable"
            assert waiting["url"] == url
            since = mqtt.mark()
            # Down long enough for the reloads to back off to 16-32 s apart: never a give-up.
            await asyncio.sleep(SERVER_DOWN_S)
            states = {m.json()["state"] for m in mqtt.messages(f"{root}/status", since=since)}
            assert not states & {"idle", "error"}, states

            back = mqtt.mark()
            pages.up()
            # Asked every 2 s whether it answers: on screen within seconds, not at the next
            # reload, up to a minute later.
            recovered = await mqtt.wait_json(
                f"{root}/event", lambda e: e["event"] == "recovered", since=back, within=12
            )
            assert recovered["reason"] == "page_unreachable"
            status = await mqtt.wait_json(
                f"{root}/status", lambda s: s["state"] == "streaming", since=back, within=10
            )
            assert status["reason"] is None
            assert status["stream_url"] == waiting["stream_url"]
            await until_async(lambda: shows(status["stream_url"], GREEN), within=30)


async def test_a_periodic_reload_outlives_its_page_server(
    tmp_path: Path, agent_settings: Callable[..., Settings], start_agent: StartAgent
) -> None:
    with PageServer() as pages:
        async with agent(tmp_path, agent_settings, start_agent, reload_every_s=1) as (mqtt, root):
            since = mqtt.mark()
            assert (await mqtt.command(root, "start", {"url": pages.color("0000ff")}))["ok"]
            streaming = await mqtt.wait_json(
                f"{root}/status", lambda s: s["state"] == "streaming", since=since, within=60
            )

            down = mqtt.mark()
            pages.down()
            await mqtt.wait_json(
                f"{root}/event", lambda e: e["event"] == "page_error", since=down, within=30
            )
            waiting = await mqtt.wait_json(
                f"{root}/status", lambda s: s["state"] == "waiting", since=down, within=10
            )
            assert waiting["reason"] == "page_unreachable"
            assert waiting["session_id"] == streaming["session_id"]

            back = mqtt.mark()
            pages.up()
            await mqtt.wait_json(
                f"{root}/event", lambda e: e["event"] == "recovered", since=back, within=90
            )
            status = await mqtt.wait_json(
                f"{root}/status", lambda s: s["state"] == "streaming", since=back, within=10
            )
            assert status["stream_url"] == streaming["stream_url"]
            await until_async(lambda: shows(status["stream_url"], BLUE), within=30)


async def test_a_switch_to_a_failing_page_keeps_the_stream(
    tmp_path: Path,
    agent_settings: Callable[..., Settings],
    start_agent: StartAgent,
    page_server: PageServer,
) -> None:
    async with agent(tmp_path, agent_settings, start_agent) as (mqtt, root):
        since = mqtt.mark()
        first = await mqtt.command(root, "start", {"url": page_server.color("ff0000")})
        streaming = await mqtt.wait_json(
            f"{root}/status", lambda s: s["state"] == "streaming", since=since, within=60
        )
        stream_url = streaming["stream_url"]

        for failing in ("/status/404", "/status/503"):
            since = mqtt.mark()
            bad = await mqtt.command(
                root, "start", {"url": page_server.url(failing), "id": failing}
            )
            failed = await mqtt.wait_json(
                f"{root}/event", lambda e: e["event"] == "failed", since=since, within=30
            )
            assert failed["session_id"] == bad["session_id"]
            assert failed["error"]["code"] == "PAGE_LOAD_FAILED"
            assert failed["kept_session_id"] == first["session_id"]
            # The previous page is back on the same stream; status says what failed.
            status = await mqtt.wait_json(
                f"{root}/status",
                lambda s: s["state"] == "streaming" and s["error"] is not None,
                since=since,
                within=10,
            )
            assert status["session_id"] == first["session_id"]
            assert status["url"] == page_server.color("ff0000")
            assert status["stream_url"] == stream_url
            assert status["request_id"] == failing
            assert status["error"]["code"] == "PAGE_LOAD_FAILED"
            await until_async(lambda: shows(stream_url, RED), within=30)

        since = mqtt.mark()
        await mqtt.command(root, "start", {"url": page_server.color("00ff00")})
        replaced = await mqtt.wait_json(
            f"{root}/event", lambda e: e["event"] == "replaced", since=since, within=30
        )
        assert replaced["in_place"] is True
        status = await mqtt.wait_json(
            f"{root}/status", lambda s: s["url"] == page_server.color("00ff00"), since=since
        )
        assert status["stream_url"] == stream_url
        assert status["error"] is None
        await until_async(lambda: shows(stream_url, GREEN), within=30)


async def test_a_self_heal_whose_page_is_down_waits_for_it(
    tmp_path: Path, agent_settings: Callable[..., Settings], start_agent: StartAgent
) -> None:
    with PageServer() as pages:
        async with agent(tmp_path, agent_settings, start_agent) as (mqtt, root):
            since = mqtt.mark()
            assert (await mqtt.command(root, "start", {"url": pages.color("00ff00")}))["ok"]
            streaming = await mqtt.wait_json(
                f"{root}/status", lambda s: s["state"] == "streaming", since=since, within=60
            )

            # Chromium dies while the page's server is down: the heal cannot load the page.
            down = mqtt.mark()
            pages.down()
            for browser in chromium_browser():
                os.kill(browser.pid, signal.SIGKILL)
            await mqtt.wait_json(
                f"{root}/event", lambda e: e["event"] == "page_error", since=down, within=60
            )
            waiting = await mqtt.wait_json(
                f"{root}/status", lambda s: s["state"] == "waiting", since=down, within=10
            )
            assert waiting["reason"] == "page_unreachable"

            back = mqtt.mark()
            pages.up()
            recovered = await mqtt.wait_json(
                f"{root}/event",
                lambda e: e["event"] == "recovered" and e["reason"] == "page_unreachable",
                since=back,
                within=90,
            )
            assert recovered["after_s"] > 0
            status = await mqtt.wait_json(
                f"{root}/status", lambda s: s["state"] == "streaming", since=back, within=10
            )
            assert status["stream_url"] == streaming["stream_url"]
            await until_async(lambda: shows(status["stream_url"], GREEN), within=30)
