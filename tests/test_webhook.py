"""The HTTP webhook beside MQTT: one supervisor, one dispatcher, the same answers.

The agent here is the real one (supervisor, dispatcher, MQTT transport against a real broker,
HTTP server with the webhook) with the stream-session double in place of the pipeline; both
transports are driven by a real client of their own.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from support.agent import AUTH, TOKEN, real_agent, running
from support.mqtt import Mosquitto, free_port
from support.pages import PageServer, page_server  # noqa: F401 (fixture)

from agent.config import Settings


@pytest.fixture
def webhook_settings(agent_settings: Callable[..., Settings]) -> Callable[..., Settings]:
    def make(**api: Any) -> Settings:
        return agent_settings(api={"enabled": True, "token": TOKEN, **api})

    return make


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}],
    ids=["no-token", "wrong-token", "not-bearer"],
)
async def test_every_route_needs_the_token(
    mosquitto: Mosquitto,
    webhook_settings: Callable[..., Settings],
    headers: dict[str, str],
) -> None:
    async with running(webhook_settings(), mosquitto) as agent:
        for method, path, command in [
            ("POST", "/start", "start"),
            ("POST", "/stop", "stop"),
            ("GET", "/status", "status"),
            ("GET", "/health", "health"),
        ]:
            status, body = await agent.call(method, path, {"url": "http://x.test/"}, headers)
            assert status == 401, path
            assert body == {
                "ok": False,
                "command": command,
                "id": None,
                "error": {"code": "UNAUTHORIZED", "message": "missing or wrong bearer token"},
            }
        assert agent.factory.sessions == []


async def test_webhook_answers_carry_no_cors(
    mosquitto: Mosquitto, webhook_settings: Callable[..., Settings]
) -> None:
    """Only the streams are for any origin: no page a browser shows may read these answers."""
    page = {"Origin": "http://some-page.test"}
    async with running(webhook_settings(), mosquitto) as agent:
        for method, path, headers in [
            ("POST", "/start", {**AUTH, **page}),
            ("POST", "/start", page),
            ("GET", "/status", {**AUTH, **page}),
            ("GET", "/health", {**AUTH, **page}),
            ("POST", "/stop", {**AUTH, **page}),
            ("OPTIONS", "/start", {**page, "Access-Control-Request-Method": "POST"}),
        ]:
            body = json.dumps({"url": "http://x.test/"}) if path == "/start" else None
            async with agent.http.request(
                method, agent.base + path, data=body, headers=headers
            ) as response:
                assert response.status < 500, (method, path)
                cors = {k for k in response.headers if k.lower().startswith("access-control-")}
                assert not cors, (method, path)
        assert len(agent.factory.sessions) == 1  # the authorized start did run


async def test_http_and_mqtt_drive_the_same_supervisor(
    mosquitto: Mosquitto, webhook_settings: Callable[..., Settings]
) -> None:
    async with running(webhook_settings(), mosquitto) as agent:
        status, started = await agent.call("POST", "/start", {"url": "http://a.test/", "id": "h1"})
        assert status == 200
        assert started == {
            "ok": True,
            "command": "start",
            "id": "h1",
            "session_id": started["session_id"],
            "changed": True,
        }
        # MQTT sees the stream HTTP started...
        on_mqtt = await agent.mqtt.wait_json(
            f"{agent.root}/status", lambda s: s["state"] == "streaming"
        )
        assert (on_mqtt["session_id"], on_mqtt["url"]) == (started["session_id"], "http://a.test/")
        # ... and HTTP sees what MQTT does to it.
        stopped = await agent.mqtt.command(agent.root, "stop", {"id": "m1"})
        assert stopped["session_id"] == started["session_id"]
        await agent.mqtt.wait_json(f"{agent.root}/status", lambda s: s["state"] == "idle")
        status, answer = await agent.call("GET", "/status")
        assert status == 200
        assert answer["status"]["state"] == "idle"
        assert answer["command"] == "status"

        # A bare URL body, as curl -d sends it.
        status, started = await agent.call("POST", "/start", "http://b.test/")
        assert (status, started["ok"]) == (200, True)
        status, answer = await agent.call("GET", "/status")
        assert answer["status"]["url"] == "http://b.test/"
        assert answer["session_id"] == started["session_id"]
        status, stopped = await agent.call("POST", "/stop")
        assert (status, stopped["changed"], stopped["session_id"]) == (
            200,
            True,
            started["session_id"],
        )
        status, health = await agent.call("GET", "/health")
        assert (status, health["ok"]) == (200, True)
        assert health["state"] in {"stopping", "idle"}


async def test_both_transports_answer_with_the_same_objects(
    mosquitto: Mosquitto, webhook_settings: Callable[..., Settings]
) -> None:
    async with running(webhook_settings(), mosquitto) as agent:
        for bad in [
            {"url": "ftp://x.test/", "id": "b1"},
            {"url": "http://x.test/", "quality": "8k", "id": "b2"},
            {"url": "http://x.test/", "duration": -1, "id": "b3"},
            {"url": "http://x.test/", "colour": "red", "id": "b4"},
        ]:
            via_mqtt = await agent.mqtt.command(agent.root, "start", bad)
            status, via_http = await agent.call("POST", "/start", bad)
            assert status == 400
            assert via_http == via_mqtt
            assert via_http["ok"] is False
        status, empty = await agent.call("POST", "/start", b"")
        assert (status, empty["error"]["code"]) == (400, "INVALID_PAYLOAD")
        assert agent.factory.sessions == []


async def test_a_repeated_id_is_answered_not_redone_across_transports(
    mosquitto: Mosquitto, webhook_settings: Callable[..., Settings]
) -> None:
    async with running(webhook_settings(), mosquitto) as agent:
        start = {"url": "http://a.test/", "id": "once"}
        status, first = await agent.call("POST", "/start", start)
        assert status == 200
        again = await agent.mqtt.command(agent.root, "start", start)
        assert again == first
        assert len(agent.factory.sessions) == 1


async def test_allow_unauthenticated_opens_the_webhook(
    mosquitto: Mosquitto, webhook_settings: Callable[..., Settings]
) -> None:
    settings = webhook_settings(token=None, allow_unauthenticated=True)
    async with running(settings, mosquitto) as agent:
        status, started = await agent.call("POST", "/start", {"url": "http://a.test/"}, {})
        assert (status, started["ok"]) == (200, True)


async def test_an_empty_token_matches_nothing(
    mosquitto: Mosquitto, agent_settings: Callable[..., Settings]
) -> None:
    async with running(agent_settings(api={"token": ""}), mosquitto) as agent:
        status, _ = await agent.call("GET", "/status", headers={"Authorization": "Bearer "})
        assert status == 401


def test_enabling_without_a_token_is_a_config_error(
    webhook_settings: Callable[..., Settings],
) -> None:
    with pytest.raises(ValueError, match=r"api\.token is required"):
        webhook_settings(token=None)


async def test_the_agent_serves_the_webhook_beside_its_streams(
    agent_settings: Callable[..., Settings],
    page_server: PageServer,  # noqa: F811
) -> None:
    """``pagecast run`` with api.enabled: the webhook is on the stream server's port."""
    port = free_port()
    settings = agent_settings(
        cast={"device": "none"},
        stream={"http_host": "127.0.0.1", "http_port": port, "default_quality": "small"},
        qualities={"small": {"width": 640, "height": 360, "fps": 15, "bitrate_kbps": 600}},
        snapshot={"enabled": False},
        api={"enabled": True, "token": TOKEN},
    )
    root = settings.topic_root
    base = f"http://127.0.0.1:{port}"
    async with real_agent(settings) as mqtt, aiohttp.ClientSession() as http:
        page = page_server.color("00ff00")
        async with http.post(f"{base}/start", json={"url": page}) as refused:
            assert refused.status == 401
        async with http.get(f"{base}/healthz") as health:
            assert health.status == 200  # the container probe needs no token
        async with http.post(f"{base}/start", json={"url": page}, headers=AUTH) as response:
            assert response.status == 200
            assert "Access-Control-Allow-Origin" not in response.headers  # streams only
            started = await response.json()
        status = await mqtt.wait_json(
            f"{root}/status", lambda s: s["state"] == "streaming", within=30
        )
        assert (status["session_id"], status["url"]) == (started["session_id"], page)
        async with http.get(f"{base}/status", headers=AUTH) as response:
            assert (await response.json())["status"]["stream_url"] == status["stream_url"]
        async with http.post(f"{base}/stop", headers=AUTH) as response:
            assert (await response.json())["changed"] is True
        await mqtt.wait_json(f"{root}/status", lambda s: s["state"] == "idle", within=15)
