"""Issue 10's commands at the Dispatcher: scenes, rotations, interrupts, volume, reload, next.

Every bad payload gets a code and leaves the state as it was; good ones reach the session
(the double here; the real pipeline and device in test_scenes_e2e.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import yaml
from test_commands import Rig, running_rig

from agent.commands.models import Response
from agent.commands.parse import MAX_ROTATION_PAGES, parse_start
from agent.config import ConfigError, Settings, load_settings
from agent.supervisor.session import RotationPage

SCENES = {
    "doorbell": {"url": "http://cam.local/door", "duration": 8, "revert": True},
    "tour": {"urls": ["http://a.local/", {"url": "http://b.local/", "seconds": 5}], "rotate_s": 3},
}
SETTINGS = Settings(node_id="unit", scenes=SCENES)


def code_of(response: Response) -> str | None:
    return response.error.code if response.error is not None else None


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    async with running_rig(SETTINGS) as running:
        yield running


def test_a_scene_is_a_start_with_its_keys() -> None:
    request = parse_start({"scene": "doorbell"}, SETTINGS)
    assert (request.url, request.duration_s, request.revert, request.scene) == (
        "http://cam.local/door",
        8,
        True,
        "doorbell",
    )
    # The command's own keys win; its own url drops the scene's pages.
    longer = parse_start({"scene": "doorbell", "duration": 30, "quality": "1080p"}, SETTINGS)
    assert (longer.duration_s, longer.quality) == (30, "1080p")
    own = parse_start({"scene": "tour", "url": "http://c.local/"}, SETTINGS)
    assert (own.url, own.pages, own.rotate_s) == ("http://c.local/", (), None)


def test_a_rotation_is_checked_page_by_page() -> None:
    request = parse_start({"scene": "tour"}, SETTINGS)
    assert request.url == "http://a.local/"
    assert request.pages == (RotationPage("http://a.local/"), RotationPage("http://b.local/", 5))
    assert [request.page_seconds(0), request.page_seconds(1)] == [3, 5]
    timed = parse_start({"urls": [{"url": "http://a.local/", "seconds": 2}]}, SETTINGS)
    assert timed.rotate_s is None
    assert timed.page_seconds(0) == 2


BAD_STARTS = [
    ({"url": "http://a.local/", "revert": True}, "INVALID_DURATION"),
    ({"urls": []}, "INVALID_PAYLOAD"),
    (
        {"urls": [f"http://p{i}.local/" for i in range(MAX_ROTATION_PAGES + 1)], "rotate_s": 5},
        "INVALID_PAYLOAD",
    ),
    ({"urls": ["http://a.local/", "http://b.local/"], "rotate_s": 1}, "INVALID_DURATION"),
    ({"urls": ["http://a.local/", "http://b.local/"]}, "INVALID_DURATION"),
    ({"urls": ["http://a.local/", "ftp://b.local/"], "rotate_s": 3}, "INVALID_URL"),
    ({"urls": [{"url": "http://a.local/", "seconds": 0.5}], "rotate_s": 3}, "INVALID_DURATION"),
    ({"urls": [{"url": "http://a.local/", "wait": 3}], "rotate_s": 3}, "INVALID_PAYLOAD"),
    ({"url": "http://a.local/", "urls": ["http://b.local/"], "rotate_s": 3}, "INVALID_PAYLOAD"),
    ({"url": "http://a.local/", "rotate_s": 3}, "INVALID_PAYLOAD"),
    ({"urls": "http://a.local/", "rotate_s": 3}, "INVALID_PAYLOAD"),
    ({"scene": "nope"}, "UNKNOWN_SCENE"),
    ({"scene": 3}, "UNKNOWN_SCENE"),
]


@pytest.mark.parametrize(("payload", "code"), BAD_STARTS)
async def test_bad_starts_are_refused_and_change_nothing(
    rig: Rig, payload: dict[str, Any], code: str
) -> None:
    assert (await rig.send("start", {"url": "http://base.local/"})).ok
    await rig.settled()
    before = rig.supervisor.status
    response = await rig.send("start", payload)
    assert not response.ok
    assert code_of(response) == code, response
    await rig.settled()
    after = rig.supervisor.status
    assert (after.state, after.session_id, after.url) == (
        before.state,
        before.session_id,
        before.url,
    )
    assert len(rig.factory.sessions) == 1


async def test_unknown_scene_names_the_known_ones(rig: Rig) -> None:
    response = await rig.send("scene", "nope")
    assert response.error is not None
    assert response.error.code == "UNKNOWN_SCENE"
    assert "doorbell, tour" in response.error.message


async def test_cmd_scene_takes_a_name_or_an_object(rig: Rig) -> None:
    response = await rig.send("scene", "tour")
    assert response.ok
    assert response.command == "scene"
    await rig.settled()
    status = rig.supervisor.status
    assert (status.scene, status.urls, status.rotate_s, status.index) == (
        "tour",
        ("http://a.local/", "http://b.local/"),
        3,
        0,
    )
    interrupt = await rig.send("scene", {"scene": "doorbell", "id": "ring-1"})
    assert interrupt.ok
    assert interrupt.id == "ring-1"
    await rig.settled()
    status = rig.supervisor.status
    assert status.url == "http://cam.local/door"
    assert status.revert_to is not None
    assert status.revert_to["scene"] == "tour"
    assert status.revert_to["urls"] == ("http://a.local/", "http://b.local/")
    assert not (await rig.send("scene", {"url": "http://x.local/"})).ok


async def test_controls_need_a_stream(rig: Rig) -> None:
    for command, payload, code in [
        ("reload", b"", "NOT_STREAMING"),
        ("next", b"{}", "NOT_STREAMING"),
        ("volume", {"level": 0.5}, "DEVICE_NOT_FOUND"),
    ]:
        response = await rig.send(command, payload)
        assert code_of(response) == code, response
    assert rig.factory.sessions == []


async def test_reload_next_and_volume_reach_the_session(rig: Rig) -> None:
    assert (await rig.send("start", {"url": "http://a.local/"})).ok
    await rig.settled()
    session = rig.factory.sessions[0]
    assert (await rig.send("reload", b"")).ok
    no_rotation = await rig.send("next", b"")
    assert no_rotation.error is not None
    assert no_rotation.error.code == "NOT_STREAMING"
    assert (await rig.send("volume", {"level": 0.3})).ok
    assert (rig.supervisor.status.volume, rig.supervisor.status.muted) == (0.3, False)
    assert (await rig.send("volume", {"muted": True, "id": "m1"})).ok
    assert (rig.supervisor.status.volume, rig.supervisor.status.muted) == (0.3, True)
    assert session.calls[1:] == ["reload", "next", "volume:0.3:None", "volume:None:True"]

    assert (await rig.send("scene", "tour")).ok
    await rig.settled()
    assert (await rig.send("next", b"")).ok
    assert rig.factory.sessions[-1].calls[-1] == "next"


@pytest.mark.parametrize(
    "payload",
    [{"level": 1.5}, {"level": -0.1}, {"level": "loud"}, {}, {"muted": "yes"}, "0.5", b""],
)
async def test_bad_volumes_are_refused(rig: Rig, payload: Any) -> None:
    assert (await rig.send("start", {"url": "http://a.local/"})).ok
    await rig.settled()
    response = await rig.send("volume", payload)
    assert code_of(response) == "INVALID_PAYLOAD", response
    assert rig.factory.sessions[0].calls == ["start"]
    assert rig.supervisor.status.volume is None


@pytest.mark.parametrize(
    ("scene", "problem"),
    [
        ({"url": "http://a/", "revert": True}, "revert needs a duration"),
        ({"url": "http://a/", "urls": ["http://b/"]}, "either url or urls"),
        ({"duration": 5}, "either url or urls"),
        ({"url": "http://a/", "quality": "8k"}, "scenes.s.quality"),
        ({"url": "http://a/", "auth": "ha"}, "scenes.s.auth"),
        ({"urls": ["file:///etc/passwd"], "rotate_s": 3}, "not an http(s) URL"),
        ({"url": "http://a/", "colour": "red"}, "unknown key"),
    ],
)
def test_bad_scenes_are_config_errors(tmp_path: Any, scene: dict[str, Any], problem: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"scenes": {"s": scene}}))
    with pytest.raises(ConfigError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        load_settings(str(path))
