"""Waiting for what the agent logs, for tests that wait on a step only the log shows.

``with LogWatch("connect failed") as watch: ...; await watch.seen(2)`` waits until two log
messages containing the text were logged (by the in-process agent) since the block began.
"""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import TYPE_CHECKING

from loguru import logger

if TYPE_CHECKING:
    from loguru import Message


class LogWatch:
    def __init__(self, text: str) -> None:
        self.text = text
        self.messages: list[str] = []
        self._loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()
        self._sink: int | None = None

    def _write(self, message: Message) -> None:
        text = message.record["message"]
        if self.text in text:
            self.messages.append(text)
            # Loguru may call from another thread (stdlib logging of pychromecast, paho).
            self._loop.call_soon_threadsafe(self._changed.set)

    def __enter__(self) -> LogWatch:
        self._sink = logger.add(self._write, level="TRACE", format="{message}")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._sink is not None:
            logger.remove(self._sink)

    async def seen(self, count: int = 1, within: float = 10.0) -> list[str]:
        """The matching messages, once there are ``count`` of them."""
        async with asyncio.timeout(within):
            while len(self.messages) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.messages
