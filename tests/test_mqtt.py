"""The MQTT contract end to end: a real mosquitto, the real agent, a real client."""

from __future__ import annotations

from agent_double import RunningAgent
from mqtt_helpers import Mosquitto, probe


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
        started = await client.wait_json(f"{root}/event", lambda e: e["event"] == "started")
        assert started["session_id"] == session_id

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
        stopped = await client.wait_json(f"{root}/event", lambda e: e["event"] == "stopped")
        assert stopped["session_id"] == session_id
        assert not agent.factory.alive

        response = await client.command(root, "stop", "")
        assert response["ok"] is True
        assert response["changed"] is False
        assert response["id"] is None
