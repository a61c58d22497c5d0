"""The restart budget bounds a crash loop, never a lifetime of independent faults."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest
from support.listener import RecordingListener
from support.pages import PageServer
from support.procs import named
from support.streaming import running_backend, until

from agent.stream import session as session_module
from agent.supervisor.session import StreamRequest
from agent.supervisor.state import EventName

pytestmark = pytest.mark.timeout(120)


async def _kill_ffmpeg() -> int:
    [ffmpeg] = named("ffmpeg")
    os.kill(ffmpeg.pid, signal.SIGKILL)
    return ffmpeg.pid


async def test_faults_apart_are_healed_and_a_crash_loop_gives_up(
    tmp_path: Path, page_server: PageServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(session_module, "HEALTHY_RESET_S", 2.0)
    listener = RecordingListener()
    async with running_backend(tmp_path, stream={"max_restarts": 1}) as backend:
        session = backend.create_session(
            "s1", StreamRequest(url=page_server.color("00ff00"), quality="720p"), listener
        )
        await session.start()
        try:
            recovered = lambda: listener.named(EventName.RECOVERED)  # noqa: E731
            await _kill_ffmpeg()
            await until(lambda: len(recovered()) == 1, within=30)
            # Healthy for longer than the window: the next fault finds a full budget again.
            await asyncio.sleep(3)
            await _kill_ffmpeg()
            await until(lambda: len(recovered()) == 2, within=30)
            assert not listener.endings
            # A fault right after a heal is a crash loop: the budget of one is spent.
            await until(lambda: named("ffmpeg"), within=10)
            await _kill_ffmpeg()
            await until(lambda: listener.endings, within=30)
            [(error, _reason)] = listener.endings
            assert error is not None
            assert "gave up after 1 restarts" in error.message
        finally:
            await session.stop()
