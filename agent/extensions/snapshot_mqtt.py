"""Snapshots on MQTT: each new JPEG of the screen, binary and retained, on ``~/snapshot``.

The JPEGs are the encoder's second output (one every ``snapshot.interval`` seconds while
streaming); this only forwards them, so it costs a publish, not a capture. Retained, so that
Home Assistant's camera entity and late subscribers see the latest picture at once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from agent.broadcast import Broadcast
from agent.transport.base import Publisher

SnapshotSource = Callable[[], bytes | None]


class SnapshotPublisher:
    name = "snapshot-mqtt"

    def __init__(self, snapshots: Broadcast[bytes], latest: SnapshotSource) -> None:
        self._snapshots = snapshots
        self._latest = latest

    def subscriptions(self) -> Sequence[str]:
        return []

    async def on_connect(self, publisher: Publisher) -> None:
        # A broker without persistence lost the retained picture when it restarted.
        data = self._latest()
        if data is not None:
            await self._publish(publisher, data)

    async def on_message(self, topic: str, payload: bytes, publisher: Publisher) -> None:
        """Subscribes to nothing, so never called."""

    async def run(self, publisher: Publisher) -> None:
        with self._snapshots.subscribe() as queue:
            while True:
                data = await queue.get()
                # Behind a slow link only the newest picture matters.
                while not queue.empty():
                    data = queue.get_nowait()
                await self._publish(publisher, data)

    @staticmethod
    async def _publish(publisher: Publisher, data: bytes) -> None:
        # QoS 0: a lost picture is replaced by the next one within seconds.
        await publisher.publish(publisher.topics["snapshot"], data, retain=True, qos=0)
