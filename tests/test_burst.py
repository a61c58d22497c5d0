"""Latest wins, whatever the burst: the last of 300 starts fired without waiting is what streams,
in place, on the same stream URL (real broker, agent and pipeline, through MQTT)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import StartAgent
from support.mqtt import probe
from support.pages import PageServer
from support.streaming import NoDevice, until_async
from test_page_retry import GREEN, TINY, shows

from agent.config import Settings
from agent.stream.backend import StreamBackend

BURSTS = 20
STARTS = 300

pytestmark = pytest.mark.timeout(1800)


async def test_the_last_of_a_burst_of_starts_streams_in_place(
    tmp_path: Path,
    agent_settings: Callable[..., Settings],
    start_agent: StartAgent,
    page_server: PageServer,
) -> None:
    settings = agent_settings(
        stream={"http_port": 0, "work_dir": str(tmp_path), "default_quality": "tiny"},
        qualities={"tiny": TINY},
        snapshot={"enabled": False},
    )
    root = settings.topic_root
    pages = page_server.color("ff0000"), page_server.color("0000ff")
    async with (
        StreamBackend(settings, NoDevice()) as backend,
        start_agent(settings, backend.create_session),
        probe(settings.mqtt.port, f"{root}/#") as mqtt,
    ):
        since = mqtt.mark()
        await mqtt.command(root, "start", {"url": page_server.color("ffffff")})
        first = await mqtt.wait_json(
            f"{root}/status", lambda s: s["state"] == "streaming", since=since, within=60
        )
        await mqtt.wait_json(f"{root}/event", lambda e: e["event"] == "started", since=since)
        durations = []
        for burst in range(BURSTS):
            since = mqtt.mark()
            began = time.monotonic()
            for n in range(STARTS):
                payload = {"url": pages[n % 2], "id": f"{burst}-{n}"}
                await mqtt.publish(f"{root}/cmd/start", json.dumps(payload))
            final_url = f"{page_server.color('00ff00')}?burst={burst}"
            final = {"url": final_url, "id": f"{burst}-final"}
            await mqtt.publish(f"{root}/cmd/start", json.dumps(final))
            answer = await mqtt.wait_json(
                f"{root}/response/start",
                lambda r, i=final["id"]: r["id"] == i,
                since=since,
                within=60,
            )
            # Status names a switch's target at once; the event says it is on screen.
            await mqtt.wait_json(
                f"{root}/event",
                lambda e, i=answer["session_id"]: e["event"] == "replaced" and e["session_id"] == i,
                since=since,
                within=120,
            )
            durations.append(time.monotonic() - began)
            status = mqtt.messages(f"{root}/status")[-1].json()
            assert (status["url"], status["state"]) == (final_url, "streaming")
            assert status["stream_url"] == first["stream_url"]
            events = [m.json() for m in mqtt.messages(f"{root}/event", since=since)]
            assert not [e for e in events if e["event"] in ("failed", "stopped", "started")]
            assert all(e["in_place"] for e in events if e["event"] == "replaced")
            await until_async(lambda: shows(first["stream_url"], GREEN), within=30)
            # Nothing still in flight turns it into something else afterwards.
            await asyncio.sleep(1)
            latest = mqtt.messages(f"{root}/status")[-1].json()
            assert (latest["url"], latest["state"]) == (final_url, "streaming")
        print(
            f"\n{BURSTS} bursts of {STARTS + 1} starts: until the last one streamed "
            f"min {min(durations):.1f} s, mean {sum(durations) / len(durations):.1f} s, "
            f"max {max(durations):.1f} s"
        )
