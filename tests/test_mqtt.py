"""The MQTT contract end to end: a real mosquitto, the real agent, a real client."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable

import pytest
from conftest import StartAgent
from support.agent_double import RunningAgent
from support.mqtt import Mosquitto, Probe, probe, v5_request_properties

from agent import __version__
from agent.config import Settings


async def test_start_status_stop(mosquitto: Mosquitto, agent: RunningAgent) -> None:
    root = agent.root
    async with probe(mosquitto.port, f"{root}/#") as client:
        response = await client.command(root, "start", {"url": "http://example.test/", "id": "a1"})
        assert response["ok"] is True, response
        assert response["id"] == "a1"
        assert response["changed"] is True
        session_id = response["session_id"]
        status = await client.wait_json(f"{root}/status", lambda s: s["state"] == "streaming")
        assert status["session_id"] == session_id
        assert status["url"] == "http://example.test/"
        assert status["quality"] == "720p"
        assert status["request_id"] == "a1"
        assert status["player_state"] == "PLAYING"
        started = await client.wait_for(f"{root}/event", lambda m: m.json()["event"] == "started")
        assert started.json()["session_id"] == session_id
        # Status before the event about it: a client reacting to "started" sees "streaming".
        streaming = client.wait_for(f"{root}/status", lambda m: m.json()["state"] == "streaming")
        assert client.log.index(await streaming) < client.log.index(started)

        since = client.mark()
        response = await client.command(root, "status", "")
        assert response["ok"] is True
        assert response["status"]["state"] == "streaming"
        assert response["session_id"] == session_id
        # A status command also republishes the retained status and info.
        await client.wait_for(f"{root}/status", since=since)
        await client.wait_for(f"{root}/info", since=since)

        response = await client.command(root, "stop", {"id": "s1"})
        assert response == {
            "ok": True,
            "command": "stop",
            "id": "s1",
            "session_id": session_id,
            "changed": True,
        }
        status = await client.wait_json(f"{root}/status", lambda s: s["state"] == "idle")
        assert status["session_id"] is None
        stopped = await client.wait_for(f"{root}/event", lambda m: m.json()["event"] == "stopped")
        assert stopped.json()["session_id"] == session_id
        idle = client.wait_for(f"{root}/status", lambda m: m.json()["state"] == "idle")
        assert client.log.index(await idle) < client.log.index(stopped)
        assert not agent.factory.alive

        response = await client.command(root, "stop", "")
        assert response["ok"] is True
        assert response["changed"] is False
        assert response["id"] is None


async def barrier(client: Probe, root: str) -> int:
    """Commands are handled in order: once this status answer is back, all earlier ones are."""
    marker = uuid.uuid4().hex
    await client.command(root, "status", {"id": marker})
    return client.mark()


async def test_late_subscriber_sees_retained_state(
    mosquitto: Mosquitto, agent_settings: Callable[..., Settings], start_agent: StartAgent
) -> None:
    settings = agent_settings(mqtt={"password": "hunter2", "username": "pc"})
    async with start_agent(settings) as agent:
        async with probe(mosquitto.port, f"{agent.root}/#") as client:
            await client.command(agent.root, "start", "http://example.test/late")
            await client.wait_json(f"{agent.root}/status", lambda s: s["state"] == "streaming")
        async with probe(mosquitto.port, f"{agent.root}/#") as late:
            status = await late.wait_json(
                f"{agent.root}/status", lambda s: s["state"] == "streaming"
            )
            assert status["url"] == "http://example.test/late"
            availability = await late.wait_for(f"{agent.root}/availability")
            assert availability.retain
            assert availability.payload == b"online"
            heartbeat = await late.wait_for(f"{agent.root}/heartbeat")
            assert heartbeat.retain
            beat = heartbeat.json()
            assert {"ts", "seq", "uptime_s", "state", "mqtt_reconnects", "version"} <= set(beat)
            info = (await late.wait_for(f"{agent.root}/info")).json()
            assert info["version"] == __version__
            assert "720p" in info["qualities"]
            assert info["config"]["mqtt"]["password"] == "***"
            assert info["config"]["node_id"] == settings.node_id
            for topic in ("status", "heartbeat", "info", "availability"):
                assert late.messages(f"{agent.root}/{topic}")[0].retain, topic
            assert not any(b"hunter2" in m.payload for m in late.log)


def _big(size: int) -> bytes:
    return b'{"url": "http://a/", "pad": "' + b"x" * size + b'"}'


MQTT_BAD_INPUT: list[tuple[str, str, bytes, str]] = [
    ("malformed JSON", "start", b'{"url": ', "INVALID_PAYLOAD"),
    ("JSON array", "start", b'["http://a/"]', "INVALID_PAYLOAD"),
    ("JSON number", "start", b"12", "INVALID_PAYLOAD"),
    ("empty payload", "start", b"", "INVALID_PAYLOAD"),
    ("100 KiB", "start", _big(100 * 1024), "INVALID_PAYLOAD"),
    ("just over 64 KiB", "start", _big(64 * 1024), "INVALID_PAYLOAD"),
    ("binary garbage", "start", bytes(range(256)), "INVALID_PAYLOAD"),
    ("unknown key", "start", b'{"url": "http://a/", "qualty": "hub"}', "INVALID_PAYLOAD"),
    ("url wrong type", "start", b'{"url": ["http://a/"]}', "INVALID_URL"),
    ("force wrong type", "start", b'{"url": "http://a/", "force": 1}', "INVALID_PAYLOAD"),
    ("duration wrong type", "start", b'{"url": "http://a/", "duration": "1h"}', "INVALID_DURATION"),
    ("file:", "start", b"file:///etc/passwd", "INVALID_URL"),
    ("javascript:", "start", b"javascript:alert(1)", "INVALID_URL"),
    ("data:", "start", b"data:text/html,hi", "INVALID_URL"),
    ("chrome:", "start", b"chrome://gpu", "INVALID_URL"),
    ("about:", "start", b"about:blank", "INVALID_URL"),
    ("view-source:", "start", b'{"url": "view-source:http://a/"}', "INVALID_URL"),
    ("ftp:", "start", b'{"url": "ftp://a/"}', "INVALID_URL"),
    ("relative URL", "start", b'{"url": "/lovelace/0"}', "INVALID_URL"),
    ("negative duration", "start", b'{"url": "http://a/", "duration": -1}', "INVALID_DURATION"),
    ("zero duration", "start", b'{"url": "http://a/", "duration": 0}', "INVALID_DURATION"),
    ("huge duration", "start", b'{"url": "http://a/", "duration": 1e9}', "INVALID_DURATION"),
    ("unknown quality", "start", b'{"url": "http://a/", "quality": "8k"}', "UNKNOWN_QUALITY"),
    ("unknown auth profile", "start", b'{"url": "http://a/", "auth": "nope"}', "INVALID_PAYLOAD"),
    ("stop with a URL", "stop", b"http://a/", "INVALID_PAYLOAD"),
    ("stop with unknown key", "stop", b'{"id": "x", "now": true}', "INVALID_PAYLOAD"),
    ("unknown command", "restart", b"{}", "INVALID_PAYLOAD"),
]


async def test_bad_input_table(mosquitto: Mosquitto, agent: RunningAgent) -> None:
    """Each bad command gets its code, the running stream is untouched, the agent keeps serving."""
    root = agent.root
    async with probe(mosquitto.port, f"{root}/#") as client:
        first = await client.command(root, "start", {"url": "http://a/running", "id": "keep"})
        await client.wait_json(f"{root}/status", lambda s: s["state"] == "streaming")
        failures = []
        for name, command, payload, code in MQTT_BAD_INPUT:
            response = await client.command(root, command, payload)
            if response["ok"] or response["error"]["code"] != code:
                failures.append(f"{name}: {response}")
            state = (await client.command(root, "status", ""))["status"]
            if (state["state"], state["session_id"]) != ("streaming", first["session_id"]):
                failures.append(f"{name}: state changed to {state}")

        # A retained command is dropped (no answer, no action) even while we are connected.
        since = client.mark()
        await client.publish(f"{root}/cmd/stop", b"", retain=True)
        await client.publish(f"{root}/cmd/start", b"http://a/retained", retain=True)
        end = await barrier(client, root)
        if client.log[since:end] and any(
            m.topic.startswith(f"{root}/response/st") and m.topic != f"{root}/response/status"
            for m in client.log[since:end]
        ):
            failures.append("retained command was answered")
        await client.publish(f"{root}/cmd/start", b"", retain=True)  # clear the retained one
        await client.publish(f"{root}/cmd/stop", b"", retain=True)

        # A repeated id is answered from the cache and not acted on again.
        repeat = await client.command(root, "start", {"url": "http://a/running", "id": "keep"})
        if repeat != first:
            failures.append(f"duplicate id: {repeat} != {first}")
        state = (await client.command(root, "status", ""))["status"]
        assert not failures, "\n".join(failures)
        assert state["session_id"] == first["session_id"]
        assert len(agent.factory.sessions) == 1
        assert len(MQTT_BAD_INPUT) + 2 >= 25

        # ...and it still serves.
        stopped = await client.command(root, "stop", {"id": "final"})
        assert stopped["ok"]
        assert stopped["changed"]
        await client.wait_json(f"{root}/status", lambda s: s["state"] == "idle")


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_retained_command_from_before_is_not_run(
    mosquitto: Mosquitto,
    agent_settings: Callable[..., Settings],
    start_agent: StartAgent,
    protocol: str,
) -> None:
    settings = agent_settings(mqtt={"protocol": protocol})
    root = settings.topic_root
    async with probe(mosquitto.port, f"{root}/#") as client:
        await client.publish(f"{root}/cmd/start", b"http://a/stale", retain=True)
        async with start_agent(settings) as agent:
            since = client.mark()
            response = await client.command(root, "status", {"id": "after"})
            assert response["status"]["state"] == "idle"
            assert client.messages(f"{root}/response/start", since=since) == []
            assert agent.factory.sessions == []
            started = await client.command(root, "start", "http://a/live")
            assert started["ok"]
            await client.wait_json(f"{root}/status", lambda s: s["state"] == "streaming")
        await client.publish(f"{root}/cmd/start", b"", retain=True)


async def test_v5_response_topic_and_correlation_data(
    mosquitto: Mosquitto, agent: RunningAgent
) -> None:
    root = agent.root
    reply_to = f"replies/{uuid.uuid4().hex}"
    async with probe(mosquitto.port, f"{reply_to}", f"{root}/response/#") as client:
        properties = v5_request_properties(reply_to, b"\x00corr-42")
        await client.publish(f"{root}/cmd/start", b"http://a/v5", properties=properties)
        direct = await client.wait_for(reply_to)
        assert direct.json()["ok"] is True
        assert direct.properties is not None
        assert getattr(direct.properties, "CorrelationData", None) == b"\x00corr-42"
        usual = await client.wait_for(f"{root}/response/start")
        assert usual.json() == direct.json()


async def test_mqtt_311_agent(
    mosquitto: Mosquitto, agent_settings: Callable[..., Settings], start_agent: StartAgent
) -> None:
    settings = agent_settings(mqtt={"protocol": "3.1.1"})
    async with start_agent(settings) as agent, probe(mosquitto.port, f"{agent.root}/#") as client:
        started = await client.command(agent.root, "start", {"url": "http://a/311", "id": "v3"})
        assert started["ok"]
        await client.wait_json(f"{agent.root}/status", lambda s: s["state"] == "streaming")
        stopped = await client.command(agent.root, "stop", "")
        assert stopped["changed"]
        await client.wait_json(f"{agent.root}/status", lambda s: s["state"] == "idle")


async def test_fleet_and_group_commands(
    mosquitto: Mosquitto, agent_settings: Callable[..., Settings], start_agent: StartAgent
) -> None:
    base = f"fleet-{uuid.uuid4().hex[:6]}"
    kitchen = agent_settings(mqtt={"base_topic": base}, groups=["Kitchen", "downstairs"])
    hall = agent_settings(mqtt={"base_topic": base}, groups=["downstairs"])
    async with (
        start_agent(kitchen) as one,
        start_agent(hall) as two,
        probe(mosquitto.port, f"{base}/#") as client,
    ):
        since = client.mark()
        await client.publish(f"{base}/group/kitchen/cmd/start", b'{"url": "http://a/k"}')
        response = await client.wait_json(f"{one.root}/response/start", since=since)
        assert response["ok"]
        await client.wait_json(f"{one.root}/status", lambda s: s["state"] == "streaming")
        await barrier(client, two.root)
        assert client.messages(f"{two.root}/response/start", since=since) == []

        await client.publish(f"{base}/group/downstairs/cmd/start", b"http://a/both")
        for agent in (one, two):
            await client.wait_json(
                f"{agent.root}/status",
                lambda s: s["state"] == "streaming" and s["url"] == "http://a/both",
                since=since,
            )

        since = client.mark()
        await client.publish(f"{base}/all/cmd/stop", b"")
        for agent in (one, two):
            answer = await client.wait_json(f"{agent.root}/response/stop", since=since)
            assert answer["ok"]
            assert answer["changed"]
            await client.wait_json(
                f"{agent.root}/status", lambda s: s["state"] == "idle", since=since
            )


async def test_200_commands_without_waiting(mosquitto: Mosquitto, agent: RunningAgent) -> None:
    root = agent.root
    count = 200
    async with probe(mosquitto.port, f"{root}/response/#", f"{root}/status") as client:
        since = client.mark()
        for i in range(count):
            if i % 3 == 2:
                payload = json.dumps({"id": f"c{i}"})
                command = "stop"
            else:
                payload = json.dumps({"url": f"http://a/{i}", "id": f"c{i}"})
                command = "start"
            client.client._client.publish(f"{root}/cmd/{command}", payload, qos=1)
        last_url = f"http://a/{count - 1}"

        await client.wait_until(
            lambda: len([m for m in client.log[since:] if "/response/" in m.topic]) >= count,
            within=30,
        )
        responses = [m.json() for m in client.log[since:] if "/response/" in m.topic]
        assert len(responses) == count
        assert [r["id"] for r in responses] == [f"c{i}" for i in range(count)]
        assert all(r["ok"] for r in responses)
        status = await client.wait_json(
            f"{root}/status",
            lambda s: s["state"] == "streaming" and s["url"] == last_url,
            since=since,
            within=15,
        )
        assert status["request_id"] == f"c{count - 1}"
        assert len(agent.factory.alive) == 1


async def test_heartbeat_counts_and_reports_stream_figures(
    mosquitto: Mosquitto, agent_settings: Callable[..., Settings], start_agent: StartAgent
) -> None:
    settings = agent_settings(mqtt={"heartbeat_interval": 0.2})
    async with start_agent(settings) as agent, probe(mosquitto.port, f"{agent.root}/#") as client:
        topic = f"{agent.root}/heartbeat"
        idle = await client.wait_json(topic, lambda b: b["state"] == "idle")
        assert idle["stream"] is None
        assert idle["mqtt_reconnects"] == 0
        await client.command(agent.root, "start", "http://a/beat")
        beat = await client.wait_json(topic, lambda b: b["state"] == "streaming")
        assert beat["stream"]["fps"] == 30.0
        assert beat["stream"]["dropped_frames"] == 0
        assert beat["seq"] > idle["seq"]
        seqs = [m.json()["seq"] for m in client.messages(topic)]
        assert seqs == sorted(seqs)
        assert len(set(seqs)) == len(seqs)
