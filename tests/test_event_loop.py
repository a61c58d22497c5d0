"""Nothing blocks the event loop: a real stream (broker, agent, Xvfb, Chromium, ffmpeg, HTTP)
runs while every callback the loop executes is timed, and any callback that keeps the loop
busy longer than 50 ms fails the test.

asyncio's debug mode (``loop.slow_callback_duration``) does the same with wall-clock time,
which on a loaded machine (2 cores, a dozen Chromiums of other test runs) also counts the time
the thread merely waited for a CPU: callbacks of a few milliseconds showed up at 60-100 ms. So
the same per-callback hook is used here, minus the thread's run-queue wait, which the kernel
counts in ``/proc/thread-self/schedstat``: what is left is time on a CPU or blocked in a system
call (a file read, a DNS lookup), which is what blocking the loop means.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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


@contextmanager
def blocking_callbacks(limit_s: float) -> Iterator[list[str]]:
    """Every callback of this thread's loop that was busy longer than ``limit_s``."""
    found: list[str] = []
    schedstat = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
    run = asyncio.Handle._run

    def waited_ns() -> int:
        # "<ns on a CPU> <ns waiting for a CPU> <timeslices>"; pread re-reads it fresh.
        return int(os.pread(schedstat, 100, 0).split()[1])

    def timed_run(handle: asyncio.Handle) -> None:
        waited, began = waited_ns(), time.monotonic()
        run(handle)
        wall = time.monotonic() - began
        if wall > limit_s:
            busy = wall - (waited_ns() - waited) / 1e9
            if busy > limit_s:
                # A task's step names its task (and where its coroutine stands now).
                what = getattr(handle._callback, "__self__", handle)  # type: ignore[attr-defined]
                found.append(f"{busy * 1000:.0f} ms busy ({wall * 1000:.0f} ms wall): {what}")

    asyncio.Handle._run = timed_run  # type: ignore[method-assign]
    try:
        yield found
    finally:
        asyncio.Handle._run = run  # type: ignore[method-assign]
        os.close(schedstat)


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
    with blocking_callbacks(SLOW_S) as slow:
        async with (
            StreamBackend(settings, OneDevice(by_name)) as backend,
            start_agent(settings, backend.create_session),
            probe(settings.mqtt.port, f"{root}/#") as mqtt,
        ):
            await exercise(mqtt, root, page_server, backend)
    assert by_name.played
    assert slow == []


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
