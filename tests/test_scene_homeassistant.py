"""Issue 10's Home Assistant entities, rendered as HA renders them and fed to the agent's real
command parser: the scene select, the volume number, the mute switch, Reload and Next.
Driven through the broker with a real stream and the fake TV: test_scenes_e2e.py."""

from __future__ import annotations

import json

from test_homeassistant import STREAMING, ha_command, ha_state, settings

from agent.commands.parse import decode, parse_bare, parse_scene, parse_volume
from agent.extensions.homeassistant import discovery_document

SCENES = {
    "doorbell": {"url": "http://cam.local/door", "duration": 30, "revert": True},
    "dashboard": {"url": "http://ha.local/lovelace/0"},
}


def test_the_scene_select_lists_the_scenes_and_starts_one() -> None:
    config = settings(scenes=SCENES)
    scene = discovery_document(config)["components"]["scene"]
    assert (scene["platform"], scene["command_topic"]) == (
        "select",
        "pagecast/living-room/cmd/scene",
    )
    assert scene["options"] == ["dashboard", "doorbell"]
    assert scene["qos"] == 1
    # HA publishes the chosen option as it is.
    request = parse_scene(decode(b"doorbell"), config)
    assert (request.url, request.revert) == ("http://cam.local/door", True)
    assert request.scene == "doorbell"
    on_screen = json.dumps({**STREAMING, "scene": "doorbell"}).encode()
    assert ha_state(scene, on_screen) == "doorbell"
    assert ha_state(scene, json.dumps({**STREAMING, "scene": None}).encode()) is None


def test_no_scenes_no_select() -> None:
    assert "scene" not in discovery_document(settings())["components"]


def test_the_volume_number_sets_and_shows_the_device_volume() -> None:
    volume = discovery_document(settings())["components"]["volume"]
    assert (volume["platform"], volume["min"], volume["max"]) == ("number", 0, 1)
    command = parse_volume(decode(ha_command(volume, "0.3", STREAMING)))
    assert (command.level, command.muted) == (0.3, None)
    assert ha_state(volume, json.dumps({**STREAMING, "volume": 0.3}).encode()) == "0.3"
    assert ha_state(volume, json.dumps({**STREAMING, "volume": None}).encode()) is None


def test_the_mute_switch_sends_and_reads_muted() -> None:
    mute = discovery_document(settings())["components"]["mute"]
    assert parse_volume(decode(mute["payload_on"].encode())).muted is True
    assert parse_volume(decode(mute["payload_off"].encode())).muted is False
    assert ha_state(mute, json.dumps({**STREAMING, "muted": True}).encode()) == mute["state_on"]
    assert ha_state(mute, json.dumps({**STREAMING, "muted": False}).encode()) == mute["state_off"]
    assert ha_state(mute, json.dumps({**STREAMING, "muted": None}).encode()) is None


def test_reload_and_next_buttons() -> None:
    components = discovery_document(settings())["components"]
    for key, command in (("reload", "reload"), ("next", "next")):
        button = components[key]
        assert button["command_topic"] == f"pagecast/living-room/cmd/{command}"
        parse_bare(command, decode(button["payload_press"].encode()))
