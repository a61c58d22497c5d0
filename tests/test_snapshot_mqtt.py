"""Snapshots on ``~/snapshot``: the forwarding logic, then the real thing through the broker."""

from __future__ import annotations

import asyncio

from test_homeassistant import RecordingPublisher

from agent.broadcast import Broadcast
from agent.config import Settings
from agent.extensions.snapshot_mqtt import SnapshotPublisher

JPEG_A = b"\xff\xd8 first \xff\xd9"
JPEG_B = b"\xff\xd8 second \xff\xd9"


async def test_each_new_snapshot_is_published_retained() -> None:
    config = Settings(node_id="hall")
    snapshots: Broadcast[bytes] = Broadcast()
    publisher = RecordingPublisher(config)
    extension = SnapshotPublisher(snapshots, lambda: None)
    runner = asyncio.create_task(extension.run(publisher))
    try:
        await asyncio.sleep(0)  # let it subscribe
        snapshots.publish(JPEG_A)
        await asyncio.wait_for(publisher.changed.wait(), 2)
        assert publisher.published == [("pagecast/hall/snapshot", JPEG_A, True)]
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)


async def test_a_backlog_collapses_to_the_newest_picture() -> None:
    config = Settings(node_id="hall")
    snapshots: Broadcast[bytes] = Broadcast()
    publisher = RecordingPublisher(config)
    extension = SnapshotPublisher(snapshots, lambda: None)
    runner = asyncio.create_task(extension.run(publisher))
    try:
        await asyncio.sleep(0)
        # Both arrive before the extension runs again, as behind a slow broker link.
        snapshots.publish(JPEG_A)
        snapshots.publish(JPEG_B)
        await asyncio.wait_for(publisher.changed.wait(), 2)
        await asyncio.sleep(0.05)
        assert [payload for _, payload, _ in publisher.published] == [JPEG_B]
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)


async def test_a_reconnect_republishes_the_latest_picture() -> None:
    config = Settings(node_id="hall")
    publisher = RecordingPublisher(config)
    await SnapshotPublisher(Broadcast(), lambda: JPEG_B).on_connect(publisher)
    assert publisher.published == [("pagecast/hall/snapshot", JPEG_B, True)]
    idle = RecordingPublisher(config)
    await SnapshotPublisher(Broadcast(), lambda: None).on_connect(idle)
    assert idle.published == []
