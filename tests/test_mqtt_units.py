"""Pure pieces of the MQTT adapter: topic routing and reconnect backoff."""

from __future__ import annotations

import random

import pytest

from agent.config import Settings
from agent.retry import Backoff
from agent.transport.base import encode
from agent.transport.topics import Topics


def test_topics_route_own_fleet_and_group_commands() -> None:
    topics = Topics.of(Settings(node_id="Hall TV", groups=["Down Stairs", "kitchen"]))
    assert topics.root == "pagecast/hall-tv"
    assert topics.status == "pagecast/hall-tv/status"
    assert topics.response("start") == "pagecast/hall-tv/response/start"
    assert topics.command_filters() == (
        "pagecast/hall-tv/cmd/+",
        "pagecast/all/cmd/+",
        "pagecast/group/down-stairs/cmd/+",
        "pagecast/group/kitchen/cmd/+",
    )
    assert topics.command_of("pagecast/hall-tv/cmd/start") == "start"
    assert topics.command_of("pagecast/all/cmd/stop") == "stop"
    assert topics.command_of("pagecast/group/kitchen/cmd/status") == "status"
    for other in (
        "pagecast/group/garage/cmd/stop",
        "pagecast/other/cmd/start",
        "pagecast/hall-tv/status",
        "pagecast/hall-tv/cmd/",
        "pagecast/hall-tv/cmd/start/extra",
    ):
        assert topics.command_of(other) is None, other


@pytest.mark.parametrize("seed", range(5))
def test_backoff_doubles_with_jitter_up_to_the_cap_and_resets(seed: int) -> None:
    random.seed(seed)
    backoff = Backoff(0.5, 30.0)
    delays = [backoff.next() for _ in range(10)]
    ceilings = [min(30.0, 0.5 * 2**n) for n in range(10)]
    for delay, ceiling in zip(delays, ceilings, strict=True):
        assert ceiling / 2 <= delay <= ceiling
    assert max(delays) <= 30.0
    backoff.reset()
    assert backoff.next() <= 0.5


def test_encode() -> None:
    assert encode(b"\x00\xff") == b"\x00\xff"
    assert encode("online") == b"online"
    assert encode({"url": "http://a/é"}) == '{"url":"http://a/é"}'.encode()
