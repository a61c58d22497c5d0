"""Doubles and helpers for driving the real stream backend without the supervisor."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.broadcast import Broadcast
from agent.cast.base import MEDIA_RECEIVER_APP_ID, DeviceFacts
from agent.config import Settings
from agent.stream.backend import StreamBackend
from support.settings import merge


async def until(check: Callable[[], Any], within: float = 10.0, interval: float = 0.05) -> Any:
    """Poll ``check`` until it returns something truthy; return that."""
    async with asyncio.timeout(within):
        while True:
            result = check()
            if result:
                return result
            await asyncio.sleep(interval)


async def until_async(
    check: Callable[[], Awaitable[Any]], within: float = 10.0, interval: float = 0.1
) -> Any:
    async with asyncio.timeout(within):
        while True:
            result = await check()
            if result:
                return result
            await asyncio.sleep(interval)


class NoDevice:
    """CastManager for ``cast.device: none``."""

    async def resolve(self, spec: str | None) -> None:
        return None


@dataclass
class RecordingDevice:
    """A CastDevice double: records the calls (the real protocol is tested in test_cast)."""

    host: str = "127.0.0.1"
    name: str = "Test TV"
    played: list[str] = field(default_factory=list)
    titles: list[str] = field(default_factory=list)
    stops: int = 0
    releases: int = 0
    on_play: Any = None
    on_stop: Any = None
    facts: DeviceFacts = field(default_factory=DeviceFacts)
    facts_changes: Broadcast[DeviceFacts] = field(default_factory=Broadcast)

    async def show(self, stream_url: str, title: str) -> None:
        self.played.append(stream_url)
        self.titles.append(title)
        if self.on_play is not None:
            await self.on_play(stream_url)
        self.facts = DeviceFacts(
            connected=True,
            app_id=MEDIA_RECEIVER_APP_ID,
            ours=True,
            player_state="PLAYING",
            content_id=stream_url,
        )
        self.facts_changes.publish(self.facts)

    async def stop(self, deadline: float | None = None) -> None:
        self.stops += 1
        if self.on_stop is not None:
            await self.on_stop()

    async def release(self) -> None:
        self.releases += 1

    async def set_volume(self, level: float | None, muted: bool | None) -> None:
        pass

    async def wait_connected(self, within_s: float) -> bool:
        return self.facts.connected

    async def reconnect(self) -> None:
        pass


@dataclass
class OneDevice:
    device: RecordingDevice

    async def resolve(self, spec: str | None) -> RecordingDevice:
        return self.device


def stream_settings(work_dir: Path, **overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "node_id": "pipeline-test",
        "stream": {"http_port": 0, "work_dir": str(work_dir)},
        "cast": {"device": "none"},
        "snapshot": {"interval": 1.0},
        "homeassistant": {"enabled": False},
    }
    return Settings(**merge(base, overrides))


@contextlib.asynccontextmanager
async def running_backend(
    work_dir: Path, cast: Any = None, **overrides: Any
) -> AsyncIterator[StreamBackend]:
    settings = stream_settings(work_dir, **overrides)
    async with StreamBackend(settings, cast or NoDevice()) as backend:
        yield backend
