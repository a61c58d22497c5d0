"""A SessionListener that keeps everything it is told, for tests of agent/cast and agent/stream
without the supervisor."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from agent.errors import PagecastError
from agent.supervisor.state import EventName


@dataclass
class RecordingListener:
    stream_urls: list[str] = field(default_factory=list)
    titles: list[str | None] = field(default_factory=list)
    player_states: list[str | None] = field(default_factory=list)
    devices: list[str | None] = field(default_factory=list)
    waiting: list[str | None] = field(default_factory=list)
    pages: list[tuple[int, str]] = field(default_factory=list)
    volumes: list[tuple[float | None, bool | None]] = field(default_factory=list)
    events: list[tuple[EventName, dict[str, Any]]] = field(default_factory=list)
    endings: list[tuple[PagecastError | None, str]] = field(default_factory=list)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def set_stream_url(self, stream_url: str) -> None:
        self.stream_urls.append(stream_url)
        self._changed.set()

    def set_title(self, title: str | None) -> None:
        self.titles.append(title)
        self._changed.set()

    def set_player(self, *, player_state: str | None, device: str | None) -> None:
        self.player_states.append(player_state)
        self.devices.append(device)
        self._changed.set()

    def set_page(self, index: int, url: str) -> None:
        self.pages.append((index, url))
        self._changed.set()

    def set_volume(self, level: float | None, muted: bool | None) -> None:
        self.volumes.append((level, muted))
        self._changed.set()

    def set_waiting(self, reason: str | None) -> None:
        self.waiting.append(reason)
        self._changed.set()

    def event(self, name: EventName, **data: Any) -> None:
        self.events.append((name, data))
        self._changed.set()

    def ended(self, error: PagecastError | None, reason: str) -> None:
        self.endings.append((error, reason))
        self._changed.set()

    def named(self, name: EventName) -> list[dict[str, Any]]:
        return [data for event, data in self.events if event == name]

    async def wait_until(self, predicate: Any, within_s: float) -> None:
        async with asyncio.timeout(within_s):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()
