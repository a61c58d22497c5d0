"""Snapshots on ``~/snapshot``: the forwarding logic, then the real agent through the broker."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from support.agent import real_agent
from support.media import average_rgb, close_to
from support.mqtt import probe
from support.pages import PageServer, page_server  # noqa: F401 (fixture)
from support.publisher import RecordingPublisher

from agent.broadcast import Broadcast
from agent.config import Settings
from agent.extensions.homeassistant import discovery_document
from agent.extensions.snapshot_mqtt import SnapshotPublisher

SMALL = {"width": 640, "height": 360, "fps": 15, "bitrate_kbps": 600}
BLUE = (0, 0, 255)
JPEG = b"\xff\xd8"  # start of image

JPEG_A = b"\xff\xd8 first \xff\xd9"
JPEG_B = b"\xff\xd8 second \xff\xd9"
JPEG_C = b"\xff\xd8 third \xff\xd9"


@contextlib.asynccontextmanager
async def forwarding(snapshots: Broadcast[bytes]) -> AsyncIterator[RecordingPublisher]:
    """The extension running for node ``hall``, subscribed to ``snapshots``, for the block."""
    publisher = RecordingPublisher(Settings(node_id="hall"))
    extension = SnapshotPublisher(snapshots, lambda: None)
    runner = asyncio.create_task(extension.run(publisher))
    try:
        await asyncio.sleep(0)  # one turn: run() subscribes before its first await
        yield publisher
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)


async def test_each_new_snapshot_is_published_retained() -> None:
    snapshots: Broadcast[bytes] = Broadcast()
    async with forwarding(snapshots) as publisher:
        snapshots.publish(JPEG_A)
        await asyncio.wait_for(publisher.changed.wait(), 2)
        assert publisher.published == [("pagecast/hall/snapshot", JPEG_A, True)]


async def test_a_backlog_collapses_to_the_newest_picture() -> None:
    snapshots: Broadcast[bytes] = Broadcast()
    async with forwarding(snapshots) as publisher:
        # Both arrive before the extension runs again, as behind a slow broker link.
        snapshots.publish(JPEG_A)
        snapshots.publish(JPEG_B)
        await asyncio.wait_for(publisher.changed.wait(), 2)
        # A later picture goes out after anything still pending: A was dropped, not late.
        publisher.changed.clear()
        snapshots.publish(JPEG_C)
        await asyncio.wait_for(publisher.changed.wait(), 2)
        assert [payload for _, payload, _ in publisher.published] == [JPEG_B, JPEG_C]


async def test_a_reconnect_republishes_the_latest_picture() -> None:
    config = Settings(node_id="hall")
    publisher = RecordingPublisher(config)
    await SnapshotPublisher(Broadcast(), lambda: JPEG_B).on_connect(publisher)
    assert publisher.published == [("pagecast/hall/snapshot", JPEG_B, True)]
    idle = RecordingPublisher(config)
    await SnapshotPublisher(Broadcast(), lambda: None).on_connect(idle)
    assert idle.published == []


async def test_the_real_stream_shows_up_on_mqtt(
    agent_settings: Callable[..., Settings],
    page_server: PageServer,  # noqa: F811
) -> None:
    """The whole agent (pipeline, no TV): the page's colour arrives as a retained JPEG."""
    settings = agent_settings(
        cast={"device": "none"},
        stream={"http_host": "127.0.0.1", "http_port": 0, "default_quality": "small"},
        qualities={"small": SMALL},
        snapshot={"enabled": True, "mqtt": True, "interval": 0.5},
    )
    root = settings.topic_root
    topic = f"{root}/snapshot"
    async with real_agent(settings) as mqtt:
        started = await mqtt.command(root, "start", {"url": page_server.color("0000ff")})
        assert started["ok"], started
        await mqtt.wait_json(f"{root}/status", lambda s: s["state"] == "streaming", within=30)
        snapshot = await mqtt.wait_for(topic, lambda m: m.payload[:2] == JPEG, within=30)
        assert close_to(average_rgb(snapshot.payload), BLUE)
        # Retained: what Home Assistant's camera (fed by this topic) gets when it subscribes.
        assert discovery_document(settings)["components"]["screen"]["topic"] == topic
        async with probe(settings.mqtt.port, topic) as late:
            retained = await late.wait_for(topic)
        assert retained.retain
        assert close_to(average_rgb(retained.payload), BLUE)
