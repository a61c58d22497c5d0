"""Home Assistant MQTT discovery: the agent appears in HA as one device with its entities.

One retained device-based message at ``<prefix>/device/<node_id>/config`` describes every
entity; HA then reads the agent's ordinary topics (``~/status``, ``~/heartbeat``,
``~/snapshot``) and sends ordinary commands to ``~/cmd/...``, so HA is just another client of
the topic contract. The entities are the rows of ``ENTITIES``: adding an entity is adding a
row. Disabled, the agent publishes an empty retained config, which makes HA remove the device
and its entities.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
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
# Commands from HA and the states it reads must not be lost on a flaky link.
QOS = 1


def discovery_topic(settings: Settings) -> str:
    return f"{settings.homeassistant.prefix}/device/{settings.node_id}/config"


def _truncated(text: str, present: str) -> str:
    """A template for ``text`` cut to what HA accepts, None (unknown) unless ``present``."""
    return f"{{{{ ({text})[:{MAX_STATE}] if {present} else None }}}}"


Option = object | Callable[[Settings], object]


@dataclass(frozen=True, slots=True)
class Entity:
    """One row of the entity table: an HA component that reads or drives the agent's topics.

    In ``options``, a value under a key ending in ``topic`` is a topic relative to ``~``
    (``"status"``, ``"cmd/start"``); a callable is given the settings. Everything else is
    copied as it is.
    """

    key: str
    platform: str
    name: str
    icon: str | None
    options: Mapping[str, Option]
    diagnostic: bool = False
    # Only announced when this holds for the settings (None: always).
    when: Callable[[Settings], bool] | None = None


# Most entities render ~/status; a JSON "null" there renders as None, which HA reads as
# "unknown" rather than a state.
_STATUS: Mapping[str, Option] = {"state_topic": "status"}
# The whole status as attributes: the text and select command templates read them.
_ATTRIBUTES: Mapping[str, Option] = {"json_attributes_topic": "status"}

ENTITIES: tuple[Entity, ...] = (
    Entity(
        "state",
        "sensor",
        "State",
        "mdi:cast",
        {
            **_STATUS,
            **_ATTRIBUTES,
            "value_template": "{{ value_json.state }}",
            "device_class": "enum",
            "options": [state.value for state in State],
        },
    ),
    Entity(
        "player_state",
        "sensor",
        "Player state",
        "mdi:play-pause",
        {**_STATUS, "value_template": "{{ value_json.player_state }}"},
    ),
    Entity(
        "url",
        "sensor",
        "URL",
        "mdi:web",
        {**_STATUS, "value_template": _truncated("value_json.url", "value_json.url")},
        diagnostic=True,
    ),
    Entity(
        "last_error",
        "sensor",
        "Last error",
        "mdi:alert-circle-outline",
        {
            **_STATUS,
            "value_template": _truncated(
                "value_json.error.code ~ ': ' ~ value_json.error.message", "value_json.error"
            ),
        },
        diagnostic=True,
    ),
    # A timestamp: HA shows it as a live countdown ("in 4 minutes") without us publishing
    # every second.
    Entity(
        "remaining",
        "sensor",
        "Ends",
        "mdi:timer-sand",
        {**_STATUS, "device_class": "timestamp", "value_template": "{{ value_json.ends_at }}"},
    ),
    Entity(
        "uptime",
        "sensor",
        "Uptime",
        None,
        {
            "state_topic": "heartbeat",
            "value_template": "{{ value_json.uptime_s | round(0) | int }}",
            "device_class": "duration",
            "unit_of_measurement": "s",
            # Missing heartbeats mean the agent is gone even if its will never fired.
            "expire_after": lambda s: math.ceil(s.mqtt.heartbeat_interval * 3),
        },
        diagnostic=True,
    ),
    # Setting the text starts that page, at the quality of what is showing now.
    Entity(
        "page",
        "text",
        "Page",
        "mdi:web",
        {
            **_STATUS,
            **_ATTRIBUTES,
            "value_template": f"{{{{ (value_json.url or '')[:{MAX_STATE}] }}}}",
            "mode": "text",
            "max": MAX_STATE,
            "command_topic": "cmd/start",
            "command_template": (
                "{{ {'url': value, 'quality': this.attributes.get('quality')} | tojson }}"
            ),
        },
    ),
    # Choosing a quality restarts the page that is showing at that quality.
    Entity(
        "quality",
        "select",
        "Quality",
        "mdi:quality-high",
        {
            **_STATUS,
            **_ATTRIBUTES,
            "value_template": "{{ value_json.quality }}",
            "options": lambda s: list(s.qualities),
            "command_topic": "cmd/start",
            "command_template": (
                "{{ {'url': this.attributes.get('url'), 'quality': value} | tojson }}"
            ),
        },
    ),
    Entity(
        "stop", "button", "Stop", "mdi:stop", {"command_topic": "cmd/stop", "payload_press": "{}"}
    ),
    Entity("screen", "camera", "Screen", None, {"topic": "snapshot"}),
    # Scenes, volume and the rotation (issue 10): ordinary commands on ~/cmd/scene, volume,
    # reload and next. The scene select exists only when scenes are configured (HA refuses a
    # select without options).
    Entity(
        "scene",
        "select",
        "Scene",
        "mdi:palette-outline",
        {
            **_STATUS,
            # "None" (no scene on screen) is HA's "no option selected".
            "value_template": "{{ value_json.scene }}",
            "options": lambda s: sorted(s.scenes),
            "command_topic": "cmd/scene",
        },
        when=lambda s: bool(s.scenes),
    ),
    Entity(
        "volume",
        "number",
        "Volume",
        "mdi:volume-high",
        {
            **_STATUS,
            "value_template": "{{ value_json.volume }}",
            "min": 0,
            "max": 1,
            "step": 0.05,
            "mode": "slider",
            "command_topic": "cmd/volume",
            "command_template": '{"level": {{ value }}}',
        },
    ),
    Entity(
        "mute",
        "switch",
        "Mute",
        "mdi:volume-off",
        {
            **_STATUS,
            "value_template": "{{ value_json.muted }}",
            "state_on": "True",
            "state_off": "False",
            "command_topic": "cmd/volume",
            "payload_on": '{"muted": true}',
            "payload_off": '{"muted": false}',
        },
    ),
    Entity(
        "reload",
        "button",
        "Reload",
        "mdi:reload",
        {"command_topic": "cmd/reload", "payload_press": "{}"},
    ),
    Entity(
        "next",
        "button",
        "Next page",
        "mdi:skip-next",
        {"command_topic": "cmd/next", "payload_press": "{}"},
    ),
)


def _option(key: str, value: Option, settings: Settings, topics: Topics) -> object:
    if callable(value):
        return value(settings)
    if key.endswith("topic") and isinstance(value, str):
        return topics[value]
    return value


def component(entity: Entity, settings: Settings) -> dict[str, Any]:
    """The discovery config of one entity; its unique_id depends on the node id only."""
    topics = Topics.of(settings)
    config: dict[str, Any] = {
        "platform": entity.platform,
        "name": entity.name,
        "unique_id": f"pagecast_{settings.node_id}_{entity.key}",
        # Per component: HA (2025.4) copies only availability and topic options down from the
        # device level, so a device-level qos would leave every entity at QoS 0.
        "qos": QOS,
    }
    config.update({k: _option(k, v, settings, topics) for k, v in entity.options.items()})
    if entity.icon is not None:
        config["icon"] = entity.icon
    if entity.diagnostic:
        config["entity_category"] = "diagnostic"
    return config


def discovery_document(settings: Settings) -> dict[str, Any]:
    """The device-based discovery payload: the device, and one component per entity."""
    node = settings.node_id
    return {
        "device": {
            "identifiers": [f"pagecast_{node}"],
            "name": f"pagecast {node}",
            "manufacturer": "pagecast",
            "model": "pagecast agent",
            "sw_version": __version__,
        },
        "origin": {"name": "pagecast", "sw_version": __version__},
        "availability": [{"topic": Topics.of(settings).availability}],
        "components": {
            entity.key: component(entity, settings)
            for entity in ENTITIES
            if entity.when is None or entity.when(settings)
        },
    }


class HomeAssistantDiscovery:
    """The MQTT extension: announce on connect, answer HA's birth, or withdraw when disabled."""

    name = "homeassistant"

    def __init__(
        self,
        settings: Settings,
        delay_s: tuple[float, float] = REPUBLISH_DELAY_S,
    ) -> None:
        self._settings = settings
        self._enabled = settings.homeassistant.enabled
        self._topic = discovery_topic(settings)
        self._document = discovery_document(settings)
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
