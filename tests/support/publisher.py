"""A stand-in for the MQTT transport, for tests of one extension without a broker."""

from __future__ import annotations

import asyncio

from agent.config import Settings
from agent.transport.base import PayloadLike, encode
from agent.transport.topics import Topics


class RecordingPublisher:
    """The transport side an extension sees; records instead of talking to a broker."""

    def __init__(self, config: Settings) -> None:
        self.topics = Topics.of(config)
        self.connected = True
        self.published: list[tuple[str, bytes, bool]] = []
        self.changed = asyncio.Event()
        self.republished = asyncio.Event()

    async def publish(
        self, topic: str, payload: PayloadLike, *, retain: bool = False, qos: int = 1
    ) -> bool:
        self.published.append((topic, encode(payload), retain))
        self.changed.set()
        return True

    async def republish(self) -> None:
        self.republished.set()
