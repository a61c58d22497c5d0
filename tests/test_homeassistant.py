"""Home Assistant discovery: the document, rendered the way HA renders it.

HA evaluates the templates in the discovery document with Jinja: value templates turn a
message into an entity state, command templates turn a user action into a payload. These
tests render them with Jinja too, and feed the commands to the agent's real command parser.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment
from support.agent import real_agent, running
from support.mqtt import Mosquitto, Probe, probe
from support.pages import PageServer, page_server  # noqa: F401 (fixture)
from support.publisher import RecordingPublisher

from agent.commands.parse import decode, parse_start, parse_stop
from agent.config import HomeAssistantSettings, Settings
from agent.extensions.homeassistant import (
    MAX_STATE,
    HomeAssistantDiscovery,
    discovery_document,
    discovery_topic,
)
from agent.supervisor.state import State

_JINJA = ImmutableSandboxedEnvironment()
# HA's own tojson is json.dumps; Jinja's escapes HTML characters, which no command needs.
_JINJA.filters["tojson"] = json.dumps


def render(template: str, **variables: Any) -> str:
    return _JINJA.from_string(template).render(**variables)


def ha_state(component: Mapping[str, Any], payload: bytes) -> str | None:
    """The state HA derives from a message on the component's state topic (None: unknown)."""
    value = render(
        component["value_template"], value=payload.decode(), value_json=json.loads(payload)
    )
    return None if value == "None" else value


def ha_command(component: Mapping[str, Any], value: str, attributes: Mapping[str, Any]) -> bytes:
    """The payload HA publishes when a user sets ``value`` on a text/select entity."""
    this = SimpleNamespace(state=value, attributes=dict(attributes))
    return render(component["command_template"], value=value, this=this).encode()


def settings(**overrides: Any) -> Settings:
    return Settings(node_id="living-room", **overrides)


SMALL = {"width": 640, "height": 360, "fps": 15, "bitrate_kbps": 600}
SMALLER = {"width": 320, "height": 180, "fps": 10, "bitrate_kbps": 300}
STREAMING = {
    "state": "streaming",
    "session_id": "s1",
    "url": "http://dash.local/lovelace/0",
    "quality": "hub",
    "device": "Kitchen Hub",
    "player_state": "PLAYING",
    "stream_url": "http://192.168.1.5:8099/s1/master.m3u8",
    "started_at": "2026-11-25T15:00:00.000Z",
    "ends_at": "2026-11-25T15:10:00.000Z",
    "error": None,
    "request_id": None,
    "ts": "2026-11-25T15:00:01.000Z",
}
IDLE_AFTER_FAILURE = {
    **{key: None for key in STREAMING},
    "state": "error",
    "error": {"code": "PAGE_LOAD_FAILED", "message": "net::ERR_NAME_NOT_RESOLVED"},
    "ts": "2026-11-25T15:00:01.000Z",
}


def test_one_device_message_per_node() -> None:
    assert discovery_topic(settings()) == "homeassistant/device/living-room/config"
    custom = settings(homeassistant={"prefix": "ha"})
    assert discovery_topic(custom) == "ha/device/living-room/config"


def test_document_describes_the_device_and_origin() -> None:
    doc = discovery_document(settings())
    assert doc["device"]["identifiers"] == ["pagecast_living-room"]
    assert doc["device"]["sw_version"]
    assert doc["origin"]["name"] == "pagecast"
    assert doc["availability"] == [{"topic": "pagecast/living-room/availability"}]


def test_every_entity_carries_its_own_qos() -> None:
    """HA 2025.4 copies only availability and topic options down from the device level."""
    doc = discovery_document(settings())
    inherited = {k: v for k, v in doc.items() if k == "availability" or k.endswith("topic")}
    for key, component in doc["components"].items():
        as_ha_sees_it = {**inherited, **component}
        assert as_ha_sees_it.get("qos") == 1, key


def test_unique_ids_are_stable_and_per_node() -> None:
    first = discovery_document(settings())["components"]
    again = discovery_document(settings(mqtt={"base_topic": "screens"}))["components"]
    other = discovery_document(Settings(node_id="hall"))["components"]
    ids = [c["unique_id"] for c in first.values()]
    assert len(set(ids)) == len(ids)
    assert ids == [c["unique_id"] for c in again.values()]
    assert not set(ids) & {c["unique_id"] for c in other.values()}


def test_every_command_goes_to_the_agents_command_topics() -> None:
    components = discovery_document(settings())["components"]
    commands = [c["command_topic"] for c in components.values() if "command_topic" in c]
    assert len(commands) == 7  # page, quality, stop; volume, mute, reload, next
    assert all(topic.startswith("pagecast/living-room/cmd/") for topic in commands)
    platforms = {key: c["platform"] for key, c in components.items()}
    assert platforms == {
        "state": "sensor",
        "player_state": "sensor",
        "url": "sensor",
        "last_error": "sensor",
        "remaining": "sensor",
        "uptime": "sensor",
        "page": "text",
        "quality": "select",
        "stop": "button",
        "screen": "camera",
        "volume": "number",
        "mute": "switch",
        "reload": "button",
        "next": "button",
    }


def test_sensors_render_the_status() -> None:
    components = discovery_document(settings())["components"]
    streaming = json.dumps(STREAMING).encode()
    failed = json.dumps(IDLE_AFTER_FAILURE).encode()
    assert ha_state(components["state"], streaming) == "streaming"
    assert set(components["state"]["options"]) == {s.value for s in State}
    assert ha_state(components["player_state"], streaming) == "PLAYING"
    assert ha_state(components["player_state"], failed) is None
    assert ha_state(components["url"], streaming) == STREAMING["url"]
    assert ha_state(components["url"], failed) is None
    assert ha_state(components["last_error"], streaming) is None
    assert ha_state(components["last_error"], failed) == (
        "PAGE_LOAD_FAILED: net::ERR_NAME_NOT_RESOLVED"
    )
    assert ha_state(components["remaining"], streaming) == STREAMING["ends_at"]
    assert ha_state(components["remaining"], failed) is None
    assert ha_state(components["quality"], streaming) == "hub"
    assert ha_state(components["page"], failed) == ""
    diagnostic = {k for k, c in components.items() if c.get("entity_category") == "diagnostic"}
    assert diagnostic == {"url", "last_error", "uptime"}


def test_long_urls_fit_a_state() -> None:
    components = discovery_document(settings())["components"]
    long_url = "http://dash.local/" + "x" * 400
    status = json.dumps({**STREAMING, "url": long_url}).encode()
    assert ha_state(components["url"], status) == long_url[:MAX_STATE]
    assert ha_state(components["page"], status) == long_url[:MAX_STATE]


def test_uptime_comes_from_the_heartbeat_and_expires() -> None:
    uptime = discovery_document(settings(mqtt={"heartbeat_interval": 20}))["components"]["uptime"]
    assert uptime["state_topic"] == "pagecast/living-room/heartbeat"
    assert uptime["expire_after"] == 60
    beat = json.dumps({"seq": 3, "uptime_s": 3601.6, "state": "idle"}).encode()
    assert ha_state(uptime, beat) == "3602"


def test_setting_the_page_sends_a_start_the_agent_accepts() -> None:
    config = settings()
    page = discovery_document(config)["components"]["page"]
    command = ha_command(page, "http://grafana.local/d/abc", STREAMING)
    request = parse_start(decode(command), config)
    assert request.url == "http://grafana.local/d/abc"
    assert request.quality == "hub"  # keeps the quality of what is showing
    idle = ha_command(page, "http://grafana.local/d/abc", {})
    assert parse_start(decode(idle), config).quality == config.stream.default_quality


def test_choosing_a_quality_restarts_the_page_at_it() -> None:
    config = settings()
    quality = discovery_document(config)["components"]["quality"]
    assert quality["options"] == list(config.qualities)
    command = ha_command(quality, "720p", STREAMING)
    request = parse_start(decode(command), config)
    assert (request.url, request.quality) == (STREAMING["url"], "720p")


def test_the_button_sends_a_stop() -> None:
    stop = discovery_document(settings())["components"]["stop"]
    parse_stop(decode(stop["payload_press"].encode()))
    assert stop["command_topic"] == "pagecast/living-room/cmd/stop"


def test_the_camera_shows_snapshots() -> None:
    camera = discovery_document(settings())["components"]["screen"]
    assert camera["topic"] == "pagecast/living-room/snapshot"


async def test_enabled_extension_announces_the_device() -> None:
    config = settings()
    extension = HomeAssistantDiscovery(config)
    publisher = RecordingPublisher(config)
    assert extension.subscriptions() == ["homeassistant/status"]
    await extension.on_connect(publisher)
    ((topic, payload, retain),) = publisher.published
    assert (topic, retain) == (discovery_topic(config), True)
    assert json.loads(payload) == discovery_document(config)


async def test_disabled_extension_removes_the_device() -> None:
    config = settings(homeassistant={"enabled": False})
    extension = HomeAssistantDiscovery(config)
    publisher = RecordingPublisher(config)
    assert extension.subscriptions() == []
    await extension.on_connect(publisher)
    assert publisher.published == [(discovery_topic(config), b"", True)]


@pytest.mark.parametrize(("payload", "answers"), [(b"online", True), (b"offline", False)])
async def test_home_assistant_birth_triggers_one_republish(payload: bytes, answers: bool) -> None:
    config = settings()
    extension = HomeAssistantDiscovery(config, delay_s=(0.05, 0.1))
    publisher = RecordingPublisher(config)
    runner = asyncio.create_task(extension.run(publisher))
    try:
        await extension.on_message("homeassistant/status", payload, publisher)
        try:
            await asyncio.wait_for(publisher.republished.wait(), 1.0)
            republished = True
        except TimeoutError:
            republished = False
        assert republished is answers
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)


# -- through the broker, the way Home Assistant uses it -------------------------------------


class HomeAssistantClient:
    """Does with the discovery document what HA does: read it, render states, send commands."""

    def __init__(self, mqtt: Probe, config: Settings) -> None:
        self.mqtt = mqtt
        self.root = config.topic_root
        self.topic = discovery_topic(config)

    async def discover(self, since: int = 0) -> dict[str, Any]:
        message = await self.mqtt.wait_for(self.topic, lambda m: bool(m.payload), since=since)
        document: dict[str, Any] = message.json()
        return document

    def last_status(self) -> dict[str, Any]:
        status: dict[str, Any] = self.mqtt.messages(f"{self.root}/status")[-1].json()
        return status

    def state_of(self, component: Mapping[str, Any]) -> str | None:
        message = self.mqtt.messages(component["state_topic"])[-1]
        return ha_state(component, message.payload)

    async def set_value(self, component: Mapping[str, Any], value: str) -> int:
        """A user sets a text, select or number; its attributes are the last ~/status.
        Without a command template HA sends the value itself.

        Returns a mark: status_where(since=mark) sees only what followed.
        """
        mark = self.mqtt.mark()
        payload = (
            ha_command(component, value, self.last_status())
            if "command_template" in component
            else value.encode()
        )
        await self.mqtt.publish(component["command_topic"], payload, qos=1)
        return mark

    async def press(self, button: Mapping[str, Any]) -> int:
        mark = self.mqtt.mark()
        await self.mqtt.publish(button["command_topic"], button["payload_press"], qos=1)
        return mark

    async def switch(self, switch: Mapping[str, Any], on: bool) -> int:
        mark = self.mqtt.mark()
        payload = switch["payload_on" if on else "payload_off"]
        await self.mqtt.publish(switch["command_topic"], payload, qos=1)
        return mark

    async def status_where(
        self, predicate: Callable[[dict[str, Any]], bool], since: int
    ) -> dict[str, Any]:
        found: dict[str, Any] = await self.mqtt.wait_json(
            f"{self.root}/status", predicate, since=since, within=30
        )
        return found


async def playlist_status(url: str) -> int:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        return response.status


async def test_home_assistant_sees_the_device_and_drives_it(
    agent_settings: Callable[..., Settings],
    page_server: PageServer,  # noqa: F811
) -> None:
    """The agent as ``pagecast run`` runs it (real pipeline, no TV), driven the HA way."""
    config = agent_settings(
        homeassistant={"enabled": True},
        cast={"device": "none"},
        stream={
            "http_host": "127.0.0.1",
            "http_port": 0,
            "public_host": "127.0.0.1",
            "default_quality": "small",
        },
        qualities={"small": SMALL, "smaller": SMALLER},
        snapshot={"enabled": False},
    )
    page = page_server.color("ff0000")
    async with real_agent(config, also_watch=["homeassistant/#"]) as mqtt:
        ha = HomeAssistantClient(mqtt, config)
        document = await ha.discover()
        components = document["components"]
        for component in components.values():
            assert component["unique_id"].startswith(f"pagecast_{config.node_id}_")
            if "command_topic" in component:
                assert component["command_topic"].startswith(f"{ha.root}/cmd/")
        (availability,) = document["availability"]
        assert mqtt.messages(availability["topic"])[-1].payload == b"online"
        assert ha.state_of(components["state"]) == "idle"

        # Type a URL into the Page text: a real stream starts.
        mark = await ha.set_value(components["page"], page)
        status = await ha.status_where(lambda s: s["state"] == "streaming", mark)
        assert (status["url"], status["quality"]) == (page, "small")
        assert await playlist_status(status["stream_url"]) == 200
        assert ha.state_of(components["state"]) == "streaming"
        assert ha.state_of(components["url"]) == page
        assert ha.state_of(components["player_state"]) is None  # no TV, nothing reports

        # Choose another quality: the same page again, at that quality.
        mark = await ha.set_value(components["quality"], "smaller")
        status = await ha.status_where(
            lambda s: s["state"] == "streaming" and s["quality"] == "smaller", mark
        )
        assert status["url"] == page
        assert ha.state_of(components["quality"]) == "smaller"

        # Press Stop: the stream is gone.
        mark = await ha.press(components["stop"])
        await ha.status_where(lambda s: s["state"] == "idle", mark)
        assert ha.state_of(components["state"]) == "idle"
        assert ha.state_of(components["url"]) is None
        assert await playlist_status(status["stream_url"]) == 404
        assert mqtt.messages(f"{ha.root}/response/stop")[-1].json()["ok"] is True


async def test_home_assistant_restart_gets_everything_again(
    mosquitto: Mosquitto, agent_settings: Callable[..., Settings]
) -> None:
    config = agent_settings(homeassistant={"enabled": True})
    extension = HomeAssistantDiscovery(config)
    async with running(config, mosquitto, [extension], ["homeassistant/#"]) as agent:
        ha = HomeAssistantClient(agent.mqtt, config)
        first = await ha.discover()
        mark = agent.mqtt.mark()
        born = asyncio.get_running_loop().time()
        await agent.mqtt.publish("homeassistant/status", "online", qos=1)
        again = await agent.mqtt.wait_for(ha.topic, since=mark, within=8)
        waited = asyncio.get_running_loop().time() - born
        assert again.json() == first
        assert 0.9 <= waited <= 6.0  # a random 1-5 s, so a fleet does not answer at once
        await agent.mqtt.wait_for(f"{agent.root}/status", since=mark)
        await agent.mqtt.wait_for(
            f"{agent.root}/availability", lambda m: m.payload == b"online", since=mark
        )


async def test_disabling_discovery_removes_the_device(
    mosquitto: Mosquitto, agent_settings: Callable[..., Settings]
) -> None:
    config = agent_settings(homeassistant={"enabled": True})
    async with running(config, mosquitto, [HomeAssistantDiscovery(config)]) as agent:
        pass
    disabled = config.model_copy(update={"homeassistant": HomeAssistantSettings(enabled=False)})
    async with running(
        disabled, mosquitto, [HomeAssistantDiscovery(disabled)], [discovery_topic(config)]
    ) as agent:
        # The watcher subscribed before the agent connected: the retained document first...
        removal = await agent.mqtt.wait_for(discovery_topic(config), lambda m: m.payload == b"")
        assert agent.mqtt.messages(discovery_topic(config))[0].payload != b""
        assert removal.payload == b""
    # ... and nothing is retained any more for an HA that starts later.
    async with probe(mosquitto.port, discovery_topic(config)) as later:
        with pytest.raises(TimeoutError):
            await later.wait_for(discovery_topic(config), within=0.5)
