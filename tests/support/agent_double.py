"""A controllable stream-session double for control-plane tests, and a test-only entry point.

The control plane (MQTT, commands, lifecycle) does not care how a page becomes video, so these
tests run the real agent with this double in place of the pipeline. Run as a script it is the
agent (``python tests/support/agent_double.py --config PATH``) with the double injected; only
tests use it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from agent.app import run_agent
from agent.config import Settings, load_settings
from agent.errors import PagecastError
from agent.logs import setup_logging
from agent.supervisor.session import SessionListener, StreamRequest
from agent.supervisor.state import StreamFigures

STOP_WITHIN_S = 10.0
START_DELAY_ENV = "PAGECAST_TEST_START_DELAY"


@dataclass
class DoubleSession:
    session_id: str
    request: StreamRequest
    listener: SessionListener
    start_delay_s: float
    fail_with: PagecastError | None
    calls: list[str] = field(default_factory=list)
    alive: bool = False
    volume: tuple[float | None, bool | None] = (1.0, False)

    async def start(self) -> None:
        self.calls.append("start")
        self.alive = True
        await asyncio.sleep(self.start_delay_s)
        if self.fail_with is not None:
            raise self.fail_with
        self.listener.set_stream_url(f"http://127.0.0.1:1/{self.session_id}/index.m3u8")
        self.listener.set_player(player_state="PLAYING", device="double")

    def can_switch(self, request: StreamRequest) -> bool:
        return False

    async def switch(self, session_id: str, request: StreamRequest) -> None:
        raise AssertionError("can_switch is False")

    def reload(self) -> None:
        self.calls.append("reload")

    def next_page(self) -> bool:
        self.calls.append("next")
        return bool(self.request.pages)

    async def set_volume(self, level: float | None, muted: bool | None) -> None:
        # Like a device: what is not given stays, and the result is reported back.
        self.calls.append(f"volume:{level}:{muted}")
        old_level, old_muted = self.volume
        self.volume = (old_level if level is None else level, old_muted if muted is None else muted)
        self.listener.set_volume(*self.volume)

    async def stop(
        self, successor: StreamRequest | None = None, deadline: float | None = None
    ) -> None:
        self.calls.append("stop")
        self.alive = False

    def figures(self) -> StreamFigures | None:
        return StreamFigures(fps=30.0, bitrate_kbps=2500.0, frames=90, dropped_frames=0)


class DoubleFactory:
    """Makes DoubleSessions; a test sets ``start_delay_s`` / ``fail_with`` before a start."""

    def __init__(self, start_delay_s: float = 0.02) -> None:
        self.start_delay_s = start_delay_s
        self.fail_with: PagecastError | None = None
        self.sessions: list[DoubleSession] = []

    def __call__(
        self, session_id: str, request: StreamRequest, listener: SessionListener
    ) -> DoubleSession:
        session = DoubleSession(session_id, request, listener, self.start_delay_s, self.fail_with)
        self.sessions.append(session)
        return session

    @property
    def alive(self) -> list[DoubleSession]:
        return [s for s in self.sessions if s.alive]


@dataclass
class RunningAgent:
    """An in-process agent started by the ``start_agent`` fixture."""

    settings: Settings
    factory: Any  # the session factory (a DoubleFactory unless a test passed its own)
    task: asyncio.Task[None]
    stop_event: asyncio.Event

    @property
    def root(self) -> str:
        return self.settings.topic_root

    async def stop(self) -> None:
        self.stop_event.set()
        await asyncio.wait_for(asyncio.shield(self.task), STOP_WITHIN_S)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    args = parser.parse_args()
    settings = load_settings(args.config)
    setup_logging(settings.log)
    factory = DoubleFactory(float(os.environ.get(START_DELAY_ENV, "0.02")))
    asyncio.run(run_agent(settings, session_factory=factory))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
