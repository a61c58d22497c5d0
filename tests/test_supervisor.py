"""Races and lifecycle of the single slot, driven through a controllable session double."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from agent.errors import ErrorCode, PagecastError
from agent.supervisor.session import SessionListener, StreamRequest
from agent.supervisor.state import Event, EventName, State, Status, StreamFigures
from agent.supervisor.supervisor import Supervisor


@dataclass
class DoubleSession:
    """Starts when the test says so (or at once), records every call."""

    session_id: str
    request: StreamRequest
    listener: SessionListener
    hold_start: bool
    fail_with: PagecastError | None = None
    released: asyncio.Event = field(default_factory=asyncio.Event)
    called: asyncio.Event = field(default_factory=asyncio.Event)  # set on every call
    calls: list[str] = field(default_factory=list)
    alive: bool = False
    successor: StreamRequest | None = None
    deadline: float | None = None

    async def start(self) -> None:
        self.calls.append("start")
        self.called.set()
        self.alive = True
        await asyncio.sleep(0)  # real sessions always yield at least once
        if self.hold_start:
            await self.released.wait()
        if self.fail_with is not None:
            raise self.fail_with
        self.listener.set_stream_url(f"http://stream/{self.session_id}")

    def can_switch(self, request: StreamRequest) -> bool:
        return request.quality == self.request.quality and request.device == self.request.device

    async def switch(self, session_id: str, request: StreamRequest) -> None:
        self.calls.append(f"switch:{request.url}")
        self.request = request
        await asyncio.sleep(0)

    def reload(self) -> None:
        self.calls.append("reload")

    def next_page(self) -> bool:
        self.calls.append("next")
        return bool(self.request.pages)

    async def set_volume(self, level: float | None, muted: bool | None) -> None:
        self.calls.append(f"volume:{level}:{muted}")

    async def stop(
        self, successor: StreamRequest | None = None, deadline: float | None = None
    ) -> None:
        self.calls.append("stop")
        self.successor = successor
        self.deadline = deadline
        self.alive = False

    def figures(self) -> StreamFigures | None:
        return StreamFigures(fps=30.0) if self.alive else None


class Factory:
    def __init__(self) -> None:
        self.sessions: list[DoubleSession] = []
        self.hold_start = False
        self.fail_with: PagecastError | None = None
        self.called = asyncio.Event()

    def __call__(
        self, session_id: str, request: StreamRequest, listener: SessionListener
    ) -> DoubleSession:
        session = DoubleSession(
            session_id, request, listener, self.hold_start, self.fail_with, called=self.called
        )
        self.sessions.append(session)
        return session


@dataclass
class Harness:
    supervisor: Supervisor
    factory: Factory
    events: asyncio.Queue[Event]
    statuses: asyncio.Queue[Status]

    async def settle(self) -> None:
        for _ in range(50):
            await asyncio.sleep(0)
        await asyncio.wait_for(self.supervisor._settled.wait(), 5)

    async def event(self, name: EventName) -> Event:
        while True:
            event = await asyncio.wait_for(self.events.get(), 5)
            if event.name is name:
                return event

    def drain_events(self) -> list[Event]:
        out = []
        while not self.events.empty():
            out.append(self.events.get_nowait())
        return out


async def start_called(factory: Factory, index: int = 0) -> DoubleSession:
    """Session ``index`` once the supervisor made it and called its start()."""
    async with asyncio.timeout(5):
        while not (len(factory.sessions) > index and "start" in factory.sessions[index].calls):
            factory.called.clear()
            await factory.called.wait()
    return factory.sessions[index]


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    factory = Factory()
    supervisor = Supervisor(factory)
    with supervisor.events.subscribe() as events, supervisor.status_changes.subscribe() as statuses:
        task = asyncio.create_task(supervisor.run())
        try:
            yield Harness(supervisor, factory, events, statuses)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    assert not any(s.alive for s in factory.sessions), "a session outlived the supervisor"


def req(url: str = "http://a/", quality: str = "720p", **kw: object) -> StreamRequest:
    return StreamRequest(url=url, quality=quality, **kw)  # type: ignore[arg-type]


async def test_start_then_stop(harness: Harness) -> None:
    outcome = harness.supervisor.start(req(request_id="r1"))
    assert outcome.changed
    await harness.settle()
    status = harness.supervisor.status
    assert status.state is State.STREAMING
    assert status.session_id == outcome.session_id
    assert status.stream_url == f"http://stream/{outcome.session_id}"
    assert status.request_id == "r1"
    assert harness.supervisor.figures() == StreamFigures(fps=30.0)
    started = await harness.event(EventName.STARTED)
    assert started.session_id == outcome.session_id

    assert harness.supervisor.stop() is True
    await harness.settle()
    assert harness.supervisor.status.state is State.IDLE
    assert harness.supervisor.status.session_id is None
    assert harness.supervisor.figures() is None
    assert (await harness.event(EventName.STOPPED)).data["reason"] == "command"
    assert harness.factory.sessions[0].calls == ["start", "stop"]
    assert harness.factory.sessions[0].successor is None  # a stop hands nothing over


async def test_start_reports_starting_before_streaming(harness: Harness) -> None:
    harness.factory.hold_start = True
    harness.supervisor.start(req())
    await start_called(harness.factory)
    assert harness.supervisor.status.state is State.STARTING
    harness.factory.sessions[0].released.set()
    await harness.settle()
    assert harness.supervisor.status.state is State.STREAMING


async def test_stop_while_idle_is_unchanged(harness: Harness) -> None:
    assert harness.supervisor.stop() is False
    await harness.settle()
    assert harness.supervisor.status.state is State.IDLE
    assert harness.drain_events() == []


async def test_identical_start_is_unchanged_unless_forced(harness: Harness) -> None:
    first = harness.supervisor.start(req())
    await harness.settle()
    again = harness.supervisor.start(req())
    assert (again.changed, again.session_id) == (False, first.session_id)
    forced = harness.supervisor.start(req(force=True))
    assert forced.changed
    assert forced.session_id != first.session_id
    await harness.settle()
    assert harness.supervisor.status.session_id == forced.session_id


async def test_same_page_new_duration_reschedules_without_restart(harness: Harness) -> None:
    first = harness.supervisor.start(req(duration_s=100.0))
    await harness.settle()
    ends = harness.supervisor.status.ends_at
    again = harness.supervisor.start(req(duration_s=0.2))
    assert again.changed
    assert again.session_id == first.session_id
    await harness.settle()
    assert harness.supervisor.status.ends_at is not None
    assert ends is not None
    assert harness.supervisor.status.ends_at < ends
    assert (await harness.event(EventName.FINISHED)).session_id == first.session_id
    assert len(harness.factory.sessions) == 1


async def test_new_url_same_quality_switches_in_place(harness: Harness) -> None:
    first = harness.supervisor.start(req("http://a/"))
    await harness.settle()
    second = harness.supervisor.start(req("http://b/"))
    await harness.settle()
    assert len(harness.factory.sessions) == 1
    session = harness.factory.sessions[0]
    assert session.calls == ["start", "switch:http://b/"]
    status = harness.supervisor.status
    assert (status.state, status.session_id, status.url) == (
        State.STREAMING,
        second.session_id,
        "http://b/",
    )
    replaced = await harness.event(EventName.REPLACED)
    assert replaced.session_id == second.session_id
    assert replaced.data["previous_session_id"] == first.session_id
    assert replaced.data["in_place"] is True


async def test_new_quality_restarts_the_session(harness: Harness) -> None:
    first = harness.supervisor.start(req(quality="720p"))
    await harness.settle()
    second = harness.supervisor.start(req(quality="1080p"))
    await harness.settle()
    old, new = harness.factory.sessions
    assert old.successor == req(quality="1080p")
    assert old.calls == ["start", "stop"]
    assert not old.alive
    assert new.alive
    assert harness.supervisor.status.session_id == second.session_id
    replaced = await harness.event(EventName.REPLACED)
    assert replaced.data == {
        "previous_session_id": first.session_id,
        "url": "http://a/",
        "in_place": False,
    }


async def test_start_while_starting_cancels_the_start_in_flight(harness: Harness) -> None:
    harness.factory.hold_start = True
    harness.supervisor.start(req(quality="720p"))
    await start_called(harness.factory)
    second = harness.supervisor.start(req(quality="1080p"))
    await start_called(harness.factory, 1)
    first_session, second_session = harness.factory.sessions
    assert first_session.calls == ["start", "stop"]
    assert not first_session.alive
    second_session.released.set()
    await harness.settle()
    assert harness.supervisor.status.session_id == second.session_id
    assert harness.supervisor.status.state is State.STREAMING


async def test_stop_pre_empts_a_pending_start(harness: Harness) -> None:
    harness.factory.hold_start = True
    harness.supervisor.start(req())
    await start_called(harness.factory)
    assert harness.supervisor.stop() is True
    await harness.settle()
    assert harness.supervisor.status.state is State.IDLE
    assert harness.factory.sessions[0].calls == ["start", "stop"]
    assert EventName.STARTED not in [e.name for e in harness.drain_events()]


async def test_duration_expiry_finishes_the_stream(harness: Harness) -> None:
    outcome = harness.supervisor.start(req(duration_s=0.2))
    await harness.settle()
    assert harness.supervisor.status.ends_at is not None
    finished = await harness.event(EventName.FINISHED)
    assert finished.session_id == outcome.session_id
    await harness.settle()
    assert harness.supervisor.status.state is State.IDLE
    assert not harness.factory.sessions[0].alive


async def test_failed_start_reports_error_and_is_not_retried(harness: Harness) -> None:
    harness.factory.fail_with = PagecastError(ErrorCode.PAGE_LOAD_FAILED, "HTTP 404")
    outcome = harness.supervisor.start(req())
    await harness.settle()
    status = harness.supervisor.status
    assert status.state is State.ERROR
    assert status.error is not None
    assert status.error.code is ErrorCode.PAGE_LOAD_FAILED
    failed = await harness.event(EventName.FAILED)
    assert failed.session_id == outcome.session_id
    assert failed.data["error"]["code"] == "PAGE_LOAD_FAILED"
    assert not harness.factory.sessions[0].alive
    # The same request again is a new attempt, not "unchanged".
    assert harness.supervisor.start(req()).changed
    await harness.settle()
    assert harness.supervisor.stop() is True
    await harness.settle()
    assert harness.supervisor.status.state is State.IDLE


async def test_session_ending_by_itself(harness: Harness) -> None:
    harness.supervisor.start(req())
    await harness.settle()
    session = harness.factory.sessions[0]
    session.listener.event(EventName.DEVICE_LOST, reason="taken_over")
    session.listener.ended(None, "taken_over")
    await harness.settle()
    assert harness.supervisor.status.state is State.IDLE
    names = [(e.name, e.data.get("reason")) for e in harness.drain_events()]
    assert (EventName.DEVICE_LOST, "taken_over") in names
    assert (EventName.STOPPED, "taken_over") in names

    harness.supervisor.start(req("http://b/"))
    await harness.settle()
    session = harness.factory.sessions[1]
    session.listener.ended(PagecastError(ErrorCode.PIPELINE_FAILED, "ffmpeg keeps dying"), "failed")
    await harness.settle()
    status = harness.supervisor.status
    assert status.state is State.ERROR
    assert status.error is not None
    assert status.error.code is ErrorCode.PIPELINE_FAILED
    assert (await harness.event(EventName.FAILED)).data["error"]["code"] == "PIPELINE_FAILED"


async def test_reports_from_a_replaced_session_are_ignored(harness: Harness) -> None:
    harness.supervisor.start(req(quality="720p"))
    await harness.settle()
    harness.supervisor.start(req(quality="1080p"))
    await harness.settle()
    old = harness.factory.sessions[0]
    old.listener.set_player(player_state="IDLE", device="Old TV")
    old.listener.ended(PagecastError(ErrorCode.CAST_FAILED, "late"), "failed")
    await harness.settle()
    status = harness.supervisor.status
    assert (status.state, status.player_state) == (State.STREAMING, None)


async def test_player_reports_reach_the_status(harness: Harness) -> None:
    harness.supervisor.start(req())
    await harness.settle()
    harness.factory.sessions[0].listener.set_player(player_state="PLAYING", device="Kitchen")
    assert harness.supervisor.status.player_state == "PLAYING"
    assert harness.supervisor.status.device == "Kitchen"


async def test_latest_of_many_rapid_commands_wins(harness: Harness) -> None:
    rng = random.Random(7)
    harness.factory.hold_start = False
    last = None
    for i in range(200):
        if rng.random() < 0.3:
            harness.supervisor.stop()
            last = None
        else:
            quality = rng.choice(["720p", "1080p"])
            last = harness.supervisor.start(req(f"http://p/{i}", quality))
        if rng.random() < 0.2:
            await asyncio.sleep(0)
    await harness.settle()
    status = harness.supervisor.status
    if last is None:
        assert status.state is State.IDLE
        assert not any(s.alive for s in harness.factory.sessions)
    else:
        assert (status.state, status.session_id) == (State.STREAMING, last.session_id)
        assert sum(s.alive for s in harness.factory.sessions) == 1


async def test_shutdown_stops_the_stream() -> None:
    factory = Factory()
    supervisor = Supervisor(factory)
    task = asyncio.create_task(supervisor.run())
    supervisor.start(req())
    await start_called(factory)
    await asyncio.wait_for(supervisor.shutdown(), 5)
    assert supervisor.status.state is State.IDLE
    assert not factory.sessions[0].alive
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_cancelling_the_worker_mid_start_cleans_up() -> None:
    factory = Factory()
    factory.hold_start = True
    supervisor = Supervisor(factory)
    task = asyncio.create_task(supervisor.run())
    supervisor.start(req())
    await start_called(factory)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert factory.sessions[0].calls == ["start", "stop"]
    assert not factory.sessions[0].alive


@pytest.mark.parametrize("yields", range(12))
async def test_cancel_landing_as_work_completes_still_ends_the_worker(yields: int) -> None:
    # Python 3.11 loses a cancel that arrives as awaited work completes; the worker must end.
    factory = Factory()
    supervisor = Supervisor(factory)
    task = asyncio.create_task(supervisor.run())
    with supervisor.status_changes.subscribe() as statuses:
        supervisor.start(req())
        while (await asyncio.wait_for(statuses.get(), 5)).state is not State.STREAMING:
            pass
    supervisor.start(req(quality="1080p"))  # a restart, not an in-place switch
    for _ in range(yields):
        await asyncio.sleep(0)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=2)
    assert task in done, "the supervisor swallowed its cancellation"
    assert not any(s.alive for s in factory.sessions)
