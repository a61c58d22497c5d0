"""Fan-out of values to any number of async observers, without the producer waiting on them."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Generic, TypeVar

T = TypeVar("T")


class Broadcast(Generic[T]):
    """Every subscriber gets every value published after it subscribed, in order."""

    def __init__(self) -> None:
        self._queues: set[asyncio.Queue[T]] = set()

    def publish(self, value: T) -> None:
        for queue in self._queues:
            queue.put_nowait(value)

    @contextmanager
    def subscribe(self) -> Iterator[asyncio.Queue[T]]:
        queue: asyncio.Queue[T] = asyncio.Queue()
        self._queues.add(queue)
        try:
            yield queue
        finally:
            self._queues.discard(queue)
