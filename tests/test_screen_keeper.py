"""The warm screen: it idles without a page, and a start at another size right while (or after)
the browser warms up at the default size gets a working screen."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from support.listener import RecordingListener
from support.pages import PageServer
from support.procs import Proc, descendants, environment, named
from support.streaming import NoDevice, running_backend, stream_settings, until

from agent.stream.backend import StreamBackend
from agent.supervisor.session import StreamRequest

pytestmark = pytest.mark.timeout(180)

TINY = {"width": 320, "height": 180, "fps": 10, "bitrate_kbps": 300}
SMALL = {"width": 480, "height": 270, "fps": 10, "bitrate_kbps": 300}


def renderers() -> list[str]:
    return [p.cmdline for p in descendants() if "--type=renderer" in p.cmdline]


def drivers() -> list[Proc]:
    # By what it runs: other node processes (Node-RED) may be around.
    return [p for p in named("node") if "run-driver" in p.cmdline]


async def test_a_warm_browser_idles_without_a_page(tmp_path: Path, page_server: PageServer) -> None:
    """Between sessions the browser keeps no page open: no renderer process idles (60-80 MB
    PSS); the next session opens its own page and streams."""
    async with running_backend(
        tmp_path, stream={"default_quality": "tiny"}, qualities={"tiny": TINY}
    ) as backend:
        await until(lambda: backend.screens.current is not None, within=60)
        screen = backend.screens.current
        assert screen is not None
        await until(lambda: screen.alive, within=60)
        assert renderers() == []
        request = StreamRequest(url=page_server.color("ff0000"), quality="tiny")
        for session_id in ("s1", "s2"):
            listener = RecordingListener()
            session = backend.create_session(session_id, request, listener)
            await session.start()
            assert listener.stream_urls
            assert renderers()
            await session.stop()
            await until(lambda: renderers() == [], within=30)
            assert backend.screens.current is screen  # the same warm browser throughout


async def test_the_driver_runs_lean_and_the_agent_keeps_its_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Playwright's driver (Node) gets small V8 semi-spaces after the user's own NODE_OPTIONS
    and one malloc arena; the agent's own environment, which ffmpeg inherits, is unchanged."""
    monkeypatch.setenv("NODE_OPTIONS", "--stack-trace-limit=20")
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    async with running_backend(tmp_path) as backend:
        await until(lambda: backend.screens.current is not None, within=60)
        (driver,) = drivers()
        started_with = environment(driver.pid)
        assert started_with["NODE_OPTIONS"] == "--stack-trace-limit=20 --max-semi-space-size=1"
        assert started_with["MALLOC_ARENA_MAX"] == "1"
        assert os.environ["NODE_OPTIONS"] == "--stack-trace-limit=20"
        assert "MALLOC_ARENA_MAX" not in os.environ


async def test_a_backend_stopped_while_the_driver_starts_leaves_no_driver(tmp_path: Path) -> None:
    """An agent stopped right after it started: Playwright's driver is forked but has not
    answered yet. The stop waits for it and ends it rather than leave it running."""
    backend = StreamBackend(stream_settings(tmp_path), NoDevice())
    entering = asyncio.create_task(backend.__aenter__())
    await until(drivers, within=30, interval=0.005)
    # Past the fork, into the handshake: the driver takes about 0.4 s to answer.
    await asyncio.sleep(0.1)
    assert not entering.done()
    entering.cancel()
    with pytest.raises(asyncio.CancelledError):
        await entering
    assert drivers() == []


@pytest.mark.parametrize("warmed", [False, True], ids=["while-warming", "after-warming"])
async def test_another_size_than_the_warm_one(
    tmp_path: Path, page_server: PageServer, warmed: bool
) -> None:
    async with running_backend(
        tmp_path, stream={"default_quality": "tiny"}, qualities={"tiny": TINY, "small": SMALL}
    ) as backend:
        if warmed:
            await until(lambda: backend.screens.current is not None, within=60)
            current = backend.screens.current
            assert current is not None
            await until(lambda: current.alive, within=60)
        listener = RecordingListener()
        request = StreamRequest(url=page_server.color("00ff00"), quality="small")
        session = backend.create_session("s1", request, listener)
        try:
            await session.start()
            assert listener.stream_urls
            screen = backend.screens.current
            assert screen is not None
            assert (screen.geometry.width, screen.geometry.height) == (480, 270)
        finally:
            await session.stop()
        assert len(named("Xvfb")) == 1
