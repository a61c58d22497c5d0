"""Home Assistant MQTT discovery: the agent appears in HA as one device with its entities.

One retained device-based message at ``<prefix>/device/<node_id>/config`` describes every
entity; HA then reads the agent's ordinary topics (``~/status``, ``~/heartbeat``,
``~/snapshot``) and sends ordinary commands to ``~/cmd/...``, so HA is just another client of
the topic contract. Disabled, the agent publishes an empty retained config, which makes HA
remove the device and its entities.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Sequence
from typing import Any

from loguru import logger

from agent import __version__
from agent.config import Settings
from agent.supervisor.state import State
from agent.transport.base import Publisher
from agent.transport.topics import Topics

BIRTH_PAYLOAD = b"online"
# HA asks for this after its own restart; spreading the answers keeps a fleet from replying
# all at once into an HA that is still starting.
REPUBLISH_DELAY_S = (1.0, 5.0)
# HA keeps a sensor's state to 255 characters; a longer one would be rejected outright.
MAX_STATE = 255


def discovery_topic(settings: Settings) -> str:
    return f"{settings.homeassistant.prefix}/device/{settings.node_id}/config"


def _truncated(text: str, present: str) -> str:
    """A template for ``text`` cut to what HA accepts, None (unknown) unless ``present``."""
    return f"{{{{ ({text})[:{MAX_STATE}] if {present} else None }}}}"


def discovery_document(settings: Settings, configuration_url: str | None = None) -> dict[str, Any]:
    """The device-based discovery payload; unique_ids depend on the node id only."""
    topics = Topics.of(settings)
    node = settings.node_id
    # A JSON "null" renders as None, which HA reads as "unknown" rather than a state.
    components: dict[str, dict[str, Any]] = {
        "state": {
            "platform": "sensor",
            "name": "State",
            "device_class": "enum",
            "options": [state.value for state in State],
            "state_topic": topics.status,
            "value_template": "{{ value_json.state }}",
            "json_attributes_topic": topics.status,
            "icon": "mdi:cast",
        },
        "player_state": {
            "platform": "sensor",
            "name": "Player state",
            "state_topic": topics.status,
            "value_template": "{{ value_json.player_state }}",
            "icon": "mdi:play-pause",
        },
        "url": {
            "platform": "sensor",
            "name": "URL",
            "state_topic": topics.status,
            "value_template": _truncated("value_json.url", "value_json.url"),
            "entity_category": "diagnostic",
            "icon": "mdi:web",
        },
        "last_error": {
            "platform": "sensor",
            "name": "Last error",
            "state_topic": topics.status,
            "value_template": _truncated(
                "value_json.error.code ~ ': ' ~ value_json.error.message", "value_json.error"
            ),
            "entity_category": "diagnostic",
            "icon": "mdi:alert-circle-outline",
        },
        # A timestamp: HA shows it as a live countdown ("in 4 minutes") without us publishing
        # every second.
        "remaining": {
            "platform": "sensor",
            "name": "Ends",
            "device_class": "timestamp",
            "state_topic": topics.status,
            "value_template": "{{ value_json.ends_at }}",
            "icon": "mdi:timer-sand",
        },
        "uptime": {
            "platform": "sensor",
            "name": "Uptime",
            "device_class": "duration",
            "unit_of_measurement": "s",
            "state_topic": topics.heartbeat,
            "value_template": "{{ value_json.uptime_s | round(0) | int }}",
            # Missing heartbeats mean the agent is gone even if its will never fired.
            "expire_after": math.ceil(settings.mqtt.heartbeat_interval * 3),
            "entity_category": "diagnostic",
        },
        # Setting the text starts that page, at the quality of what is showing now.
        "page": {
            "platform": "text",
            "name": "Page",
            "mode": "text",
            "max": MAX_STATE,
            "command_topic": topics.command("start"),
            "command_template": (
                "{{ {'url': value, 'quality': this.attributes.get('quality')} | tojson }}"
            ),
            "state_topic": topics.status,
            "value_template": f"{{{{ (value_json.url or '')[:{MAX_STATE}] }}}}",
            "json_attributes_topic": topics.status,
            "icon": "mdi:web",
        },
        # Choosing a quality restarts the page that is showing at that quality.
        "quality": {
            "platform": "select",
            "name": "Quality",
            "options": list(settings.qualities),
            "command_topic": topics.command("start"),
            "command_template": (
                "{{ {'url': this.attributes.get('url'), 'quality': value} | tojson }}"
            ),
            "state_topic": topics.status,
            "value_template": "{{ value_json.quality }}",
            "json_attributes_topic": topics.status,
            "icon": "mdi:quality-high",
        },
        "stop": {
            "platform": "button",
            "name": "Stop",
            "command_topic": topics.command("stop"),
            "payload_press": "{}",
            "icon": "mdi:stop",
        },
        "screen": {
            "platform": "camera",
            "name": "Screen",
            "topic": topics["snapshot"],
        },
    }
    for key, component in components.items():
        component["unique_id"] = f"pagecast_{node}_{key}"
    device: dict[str, Any] = {
        "identifiers": [f"pagecast_{node}"],
        "name": f"pagecast {node}",
        "manufacturer": "pagecast",
        "model": "pagecast agent",
        "sw_version": __version__,
    }
    if configuration_url:
        device["configuration_url"] = configuration_url
    return {
        "device": device,
        "origin": {"name": "pagecast", "sw_version": __version__},
        "availability": [{"topic": topics.availability}],
        "qos": 1,
        "components": components,
    }


class HomeAssistantDiscovery:
    """The MQTT extension: announce on connect, answer HA's birth, or withdraw when disabled."""

    name = "homeassistant"

    def __init__(
        self,
        settings: Settings,
        configuration_url: str | None = None,
        delay_s: tuple[float, float] = REPUBLISH_DELAY_S,
    ) -> None:
        self._settings = settings
        self._enabled = settings.homeassistant.enabled
        self._topic = discovery_topic(settings)
        self._document = discovery_document(settings, configuration_url)
        self._delay_s = delay_s
        self._birth = asyncio.Event()

    def subscriptions(self) -> Sequence[str]:
        return [self._settings.homeassistant.status_topic] if self._enabled else []

    async def on_connect(self, publisher: Publisher) -> None:
        if self._enabled:
            await publisher.publish(self._topic, self._document, retain=True)
        else:
            # An empty retained config removes the device in HA and clears the broker's copy.
            await publisher.publish(self._topic, b"", retain=True)

    async def on_message(self, topic: str, payload: bytes, publisher: Publisher) -> None:
        if payload.strip() == BIRTH_PAYLOAD:
            self._birth.set()

    async def run(self, publisher: Publisher) -> None:
        while True:
            await self._birth.wait()
            await asyncio.sleep(random.uniform(*self._delay_s))
            # Births during the wait are answered by this one republish.
            self._birth.clear()
            logger.info("Home Assistant is online: republishing discovery and status")
            await publisher.republish()
