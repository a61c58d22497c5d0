"""The supervisor's wish (what is to stay on screen) and the ``waiting`` state."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from test_supervisor import Harness, harness, req  # noqa: F401  (fixture re-used)

from agent.errors import ErrorCode, PagecastError
from agent.supervisor.state import EventName, State
from agent.supervisor.supervisor import Wish


async def test_every_change_of_the_wish_is_published(harness: Harness) -> None:  # noqa: F811
    supervisor = harness.supervisor
    with supervisor.wish_changes.subscribe() as wishes:
        outcome = supervisor.start(req("http://a/", duration_s=60))
        accepted = await asyncio.wait_for(wishes.get(), 5)
        assert isinstance(accepted, Wish)
        assert accepted.session_id == outcome.session_id
        assert accepted.request.url == "http://a/"
        assert accepted.ends_at is not None
        await harness.settle()
        # The clock restarts when the stream is up: the wish is published again with it.
        streaming = await asyncio.wait_for(wishes.get(), 5)
        assert streaming is not None
        assert streaming.ends_at == supervisor.status.ends_at
        assert supervisor.wish == streaming

        supervisor.stop()
        assert await asyncio.wait_for(wishes.get(), 5) is None
        assert supervisor.wish is None


async def test_a_failed_start_spends_the_wish(harness: Harness) -> None:  # noqa: F811
    harness.factory.fail_with = PagecastError(ErrorCode.PAGE_LOAD_FAILED, "down")
    harness.supervisor.start(req())
    await harness.settle()
    assert harness.supervisor.status.state is State.ERROR
    assert harness.supervisor.wish is None


async def test_resumed_request_announces_resumed_not_started(harness: Harness) -> None:  # noqa: F811
    harness.supervisor.start(req("http://b/", resumed=True))
    await harness.settle()
    resumed = await harness.event(EventName.RESUMED)
    assert resumed.data == {"url": "http://b/", "quality": "720p"}
    assert not [e for e in harness.drain_events() if e.name is EventName.STARTED]


async def test_a_resumed_request_is_the_same_stream_as_its_command(harness: Harness) -> None:  # noqa: F811
    request = req("http://c/")
    assert replace(request, resumed=True).same_stream(request)


async def test_waiting_reported_by_the_session_and_cleared(harness: Harness) -> None:  # noqa: F811
    supervisor = harness.supervisor
    supervisor.start(req())
    await harness.settle()
    listener = harness.factory.sessions[0].listener
    listener.set_waiting("device_away")
    assert supervisor.status.state is State.WAITING
    assert supervisor.status.reason == "device_away"
    assert supervisor.status.to_payload()["reason"] == "device_away"
    listener.set_waiting(None)
    assert supervisor.status.state is State.STREAMING
    assert supervisor.status.reason is None
    listener.set_waiting("taken_over")
    supervisor.stop()
    await harness.settle()
    assert supervisor.status.state is State.IDLE
    assert supervisor.status.reason is None


async def test_waiting_reported_while_starting_shows_once_up(harness: Harness) -> None:  # noqa: F811
    harness.factory.hold_start = True
    harness.supervisor.start(req())
    while (await asyncio.wait_for(harness.statuses.get(), 5)).state is not State.STARTING:
        pass
    session = harness.factory.sessions[0]
    session.listener.set_waiting("page_unreachable")
    assert harness.supervisor.status.state is State.STARTING
    session.released.set()
    await harness.settle()
    assert harness.supervisor.status.state is State.WAITING
    assert harness.supervisor.status.reason == "page_unreachable"


async def test_reports_of_a_replaced_session_are_ignored(harness: Harness) -> None:  # noqa: F811
    harness.supervisor.start(req("http://a/", quality="720p"))
    await harness.settle()
    old = harness.factory.sessions[0].listener
    harness.supervisor.start(req("http://b/", quality="1080p"))
    await harness.settle()
    old.set_waiting("device_away")
    assert harness.supervisor.status.state is State.STREAMING


async def test_shutdown_hands_its_deadline_to_the_session(harness: Harness) -> None:  # noqa: F811
    harness.supervisor.start(req())
    await harness.settle()
    deadline = asyncio.get_running_loop().time() + 3
    assert await harness.supervisor.shutdown(deadline)
    # The device's stop request gets only what is left of the agent's shutdown budget.
    assert harness.factory.sessions[0].deadline == deadline


async def test_a_command_stop_has_no_deadline(harness: Harness) -> None:  # noqa: F811
    harness.supervisor.start(req())
    await harness.settle()
    harness.supervisor.stop()
    await harness.settle()
    assert harness.factory.sessions[0].calls[-1] == "stop"
    assert harness.factory.sessions[0].deadline is None
