"""Nothing blocks the event loop: a real stream (broker, agent, Xvfb, Chromium, ffmpeg, HTTP)
runs under asyncio's debug mode, which logs every callback that runs longer than
``slow_callback_duration``; any such callback fails the test."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import StartAgent
from support.media import fetch
from support.mqtt import probe
from support.pages import PageServer
from support.streaming import OneDevice, RecordingDevice
from test_page_retry import TINY

from agent.config import Settings
from agent.stream.backend import StreamBackend

SLOW_S = 0.05

pytestmark = pytest.mark.timeout(240)


class SlowCallbacks(logging.Handler):
    """Collects asyncio's "Executing <handle> took 0.123 seconds" warnings."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("Executing"):
            self.seen.append(message)


async def test_a_stream_never_blocks_the_loop(
    tmp_path: Path,
    agent_settings: Callable[..., Settings],
    start_agent: StartAgent,
    page_server: PageServer,
) -> None:
    settings = agent_settings(
        stream={"http_port": 0, "work_dir": str(tmp_path), "default_quality": "tiny"},
        qualities={"tiny": TINY},
        snapshot={"enabled": True, "interval": 0.5},
        mqtt={"heartbeat_interval": 0.5},
    )
    root = settings.topic_root
    # A device known by host name: choosing the stream's address resolves it.
    by_name = RecordingDevice(host="localhost")
    loop = asyncio.get_running_loop()
    slow = SlowCallbacks()
    logging.getLogger("asyncio").addHandler(slow)
    loop.set_debug(True)
    loop.slow_callback_duration = SLOW_S
    try:
        async with (
            StreamBackend(settings, OneDevice(by_name)) as backend,
            start_agent(settings, backend.create_session),
            probe(settings.mqtt.port, f"{root}/#") as mqtt,
        ):
            await exercise(mqtt, root, page_server, backend)
    finally:
        loop.set_debug(False)
        logging.getLogger("asyncio").removeHandler(slow)
    assert by_name.played
    assert slow.seen == []


async def exercise(mqtt: Any, root: str, pages: PageServer, backend: StreamBackend) -> None:
    """Start, heartbeats with figures, snapshots, HTTP reads, a switch and a stop."""
    since = mqtt.mark()
    await mqtt.command(root, "start", {"url": pages.url("/animated")})
    status = await mqtt.wait_json(
        f"{root}/status", lambda s: s["state"] == "streaming", since=since, within=60
    )

    def with_figures(beat: dict[str, Any]) -> bool:
        stream = beat.get("stream") or {}
        return bool(stream.get("bitrate_kbps")) and stream.get("segment_age_s") is not None

    await mqtt.wait_json(f"{root}/heartbeat", with_figures, since=since, within=20)
    for _ in range(10):
        await asyncio.to_thread(fetch, status["stream_url"])
        await asyncio.sleep(0.3)
    assert backend.latest_snapshot() is not None
    since = mqtt.mark()
    await mqtt.command(root, "start", {"url": pages.url("/dashboard")})
    await mqtt.wait_json(
        f"{root}/event", lambda e: e["event"] == "replaced", since=since, within=30
    )
    since = mqtt.mark()
    await mqtt.command(root, "stop")
    await mqtt.wait_json(f"{root}/status", lambda s: s["state"] == "idle", since=since, within=30)
