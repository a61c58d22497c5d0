"""Interrupts that go back (issue 10.1): the supervisor's bookkeeping of the base, driven
through the session double. End to end through MQTT and a device: test_scenes_e2e.py."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace

from test_supervisor import Harness, harness, req  # noqa: F401  (fixture re-used)

from agent.errors import ErrorCode, PagecastError
from agent.supervisor.session import RotationPage
from agent.supervisor.state import EventName, State, utcnow
from agent.supervisor.supervisor import StartOutcome, Wish
from agent.wish import from_json, to_json

SHORT = 0.3  # an interrupt's duration: long enough to see it, short enough to wait for


async def until_state_url(harness: Harness, url: str, within: float = 5) -> None:  # noqa: F811
    async with asyncio.timeout(within):
        while not (
            harness.supervisor.status.url == url
            and harness.supervisor.status.state is State.STREAMING
        ):
            await asyncio.wait_for(harness.statuses.get(), within)


async def test_an_interrupt_goes_back_in_place(harness: Harness) -> None:  # noqa: F811
    supervisor = harness.supervisor
    base = supervisor.start(req("http://dashboard/"))
    await harness.settle()
    doorbell = supervisor.start(req("http://doorbell/", duration_s=SHORT, revert=True))
    await harness.settle()
    status = supervisor.status
    assert status.url == "http://doorbell/"
    assert status.revert_to is not None
    assert status.revert_to["url"] == "http://dashboard/"
    assert status.revert_to["session_id"] == base.session_id
    wish = supervisor.wish
    assert wish is not None
    assert wish.revert_to is not None
    assert wish.revert_to.request.url == "http://dashboard/"
    interrupted = await harness.event(EventName.INTERRUPTED)
    assert interrupted.session_id == doorbell.session_id
    assert interrupted.data["previous_session_id"] == base.session_id
    assert interrupted.data["revert_to"] == "http://dashboard/"
    assert interrupted.data["in_place"] is True

    reverted = await harness.event(EventName.REVERTED)
    assert reverted.session_id == base.session_id
    assert reverted.data == {
        "previous_session_id": doorbell.session_id,
        "url": "http://dashboard/",
        "in_place": True,
    }
    await harness.settle()
    status = supervisor.status
    assert (status.state, status.url, status.session_id) == (
        State.STREAMING,
        "http://dashboard/",
        base.session_id,
    )
    assert status.revert_to is None
    assert status.ends_at is None
    # One session throughout: the page changed in the running stream, twice.
    assert len(harness.factory.sessions) == 1
    assert harness.factory.sessions[0].calls == [
        "start",
        "switch:http://doorbell/",
        "switch:http://dashboard/",
    ]
    assert not [e for e in harness.drain_events() if e.name is EventName.FINISHED]


async def test_a_newer_interrupt_returns_to_the_same_base(harness: Harness) -> None:  # noqa: F811
    supervisor = harness.supervisor
    base = supervisor.start(req("http://dashboard/"))
    await harness.settle()
    supervisor.start(req("http://doorbell/", duration_s=30, revert=True))
    await harness.settle()
    supervisor.start(req("http://camera/", duration_s=SHORT, revert=True))
    await harness.settle()
    assert supervisor.status.url == "http://camera/"
    assert supervisor.status.revert_to is not None
    assert supervisor.status.revert_to["url"] == "http://dashboard/"
    reverted = await harness.event(EventName.REVERTED)
    assert reverted.session_id == base.session_id
    await until_state_url(harness, "http://dashboard/")


async def test_the_same_interrupt_again_extends_it(harness: Harness) -> None:  # noqa: F811
    supervisor = harness.supervisor
    supervisor.start(req("http://dashboard/"))
    await harness.settle()
    first = supervisor.start(req("http://doorbell/", duration_s=SHORT, revert=True))
    await harness.settle()
    again = supervisor.start(req("http://doorbell/", duration_s=60, revert=True))
    assert again.session_id == first.session_id
    assert again.changed
    await asyncio.sleep(SHORT * 2)
    assert supervisor.status.url == "http://doorbell/"
    assert supervisor.status.revert_to is not None
    # Rung again with the same duration: the time starts again, the base stays.
    before = supervisor.status.ends_at
    assert before is not None
    await asyncio.sleep(0.01)
    assert supervisor.start(req("http://doorbell/", duration_s=60, revert=True)).changed
    after = supervisor.status.ends_at
    assert after is not None
    assert after > before
    assert supervisor.status.revert_to["url"] == "http://dashboard/"


async def test_a_plain_start_makes_a_new_base(harness: Harness) -> None:  # noqa: F811
    supervisor = harness.supervisor
    supervisor.start(req("http://dashboard/"))
    await harness.settle()
    supervisor.start(req("http://doorbell/", duration_s=SHORT, revert=True))
    await harness.settle()
    supervisor.start(req("http://grafana/"))
    await harness.settle()
    assert supervisor.status.revert_to is None
    assert supervisor.wish is not None
    assert supervisor.wish.revert_to is None
    await asyncio.sleep(SHORT * 2)
    assert supervisor.status.url == "http://grafana/"
    assert not [e for e in harness.drain_events() if e.name is EventName.REVERTED]


async def test_stop_clears_the_interrupt_and_its_base(harness: Harness) -> None:  # noqa: F811
    supervisor = harness.supervisor
    supervisor.start(req("http://dashboard/"))
    await harness.settle()
    supervisor.start(req("http://doorbell/", duration_s=SHORT, revert=True))
    await harness.settle()
    supervisor.stop()
    await harness.settle()
    await asyncio.sleep(SHORT * 2)
    await harness.settle()
    assert supervisor.status.state is State.IDLE
    assert supervisor.wish is None
    assert not [e for e in harness.drain_events() if e.name is EventName.REVERTED]


async def test_the_base_keeps_only_the_time_it_had_left(harness: Harness) -> None:  # noqa: F811
    supervisor = harness.supervisor
    supervisor.start(req("http://dashboard/", duration_s=SHORT))
    await harness.settle()
    supervisor.start(req("http://doorbell/", duration_s=SHORT * 2, revert=True))
    # The dashboard's own time ran out during the doorbell: it ends instead of coming back.
    finished = await harness.event(EventName.FINISHED)
    assert finished.data["reason"] == "duration"
    await harness.settle()
    assert supervisor.status.state is State.IDLE
    assert not [e for e in harness.drain_events() if e.name is EventName.REVERTED]


async def test_an_interrupt_over_nothing_just_ends(harness: Harness) -> None:  # noqa: F811
    harness.supervisor.start(req("http://doorbell/", duration_s=SHORT, revert=True))
    await harness.settle()
    assert harness.supervisor.status.revert_to is None
    await harness.event(EventName.STARTED)
    await harness.event(EventName.FINISHED)


async def test_a_failed_interrupt_gives_the_screen_back(harness: Harness) -> None:  # noqa: F811
    supervisor = harness.supervisor
    base = supervisor.start(req("http://dashboard/"))
    await harness.settle()
    harness.factory.fail_with = PagecastError(ErrorCode.PAGE_LOAD_FAILED, "doorbell is down")
    # Another quality: a new session, which fails; the dashboard comes back in a new one.
    supervisor.start(req("http://doorbell/", quality="1080p", duration_s=30, revert=True))
    while (await asyncio.wait_for(harness.statuses.get(), 5)).state is not State.STARTING:
        pass
    harness.factory.fail_with = None  # only the doorbell's session fails
    failed = await harness.event(EventName.FAILED)
    assert failed.data["error"]["code"] == "PAGE_LOAD_FAILED"
    reverted = await harness.event(EventName.REVERTED)
    assert reverted.session_id == base.session_id
    assert reverted.data["in_place"] is False
    await until_state_url(harness, "http://dashboard/")
    assert supervisor.wish is not None
    assert supervisor.wish.session_id == base.session_id


async def saved_interrupt(harness: Harness) -> tuple[StartOutcome, Wish]:  # noqa: F811
    """A dashboard, a doorbell interrupt over it, then a stop: (the base's start, the wish as
    saved while the interrupt ran, as a restart finds it)."""
    supervisor = harness.supervisor
    base = supervisor.start(req("http://dashboard/"))
    await harness.settle()
    supervisor.start(req("http://doorbell/", duration_s=SHORT, revert=True))
    await harness.settle()
    saved = supervisor.wish
    assert saved is not None
    supervisor.stop()
    await harness.settle()
    return base, saved


async def test_a_saved_interrupt_is_resumed_with_its_base(harness: Harness) -> None:  # noqa: F811
    supervisor = harness.supervisor
    base, saved = await saved_interrupt(harness)

    # As after a restart: the interrupt comes back with what it had left, then its base.
    resumed = supervisor.resume(saved)
    assert resumed is not None
    await harness.settle()
    assert supervisor.status.url == "http://doorbell/"
    assert supervisor.status.revert_to is not None
    assert (await harness.event(EventName.RESUMED)).data["url"] == "http://doorbell/"
    reverted = await harness.event(EventName.REVERTED)
    assert reverted.session_id == base.session_id
    await until_state_url(harness, "http://dashboard/")


async def test_a_saved_interrupt_that_ended_meanwhile_resumes_its_base(
    harness: Harness,  # noqa: F811
) -> None:
    supervisor = harness.supervisor
    base, saved = await saved_interrupt(harness)
    await asyncio.sleep(SHORT * 1.5)
    resumed = supervisor.resume(saved)
    assert resumed is not None
    assert resumed.session_id == base.session_id
    await until_state_url(harness, "http://dashboard/")
    assert supervisor.status.revert_to is None
    expired = replace(saved, revert_to=None)
    assert supervisor.resume(expired) is None


def test_an_interrupt_over_a_rotation_is_saved_whole() -> None:
    """The wish file (agent/wish.py) keeps the way back and the rotation's pages."""
    base = Wish(
        "base",
        req(
            "http://a/",
            pages=(RotationPage("http://a/"), RotationPage("http://b/", 30)),
            rotate_s=10,
            scene="tour",
        ),
        ends_at=utcnow(),
    )
    interrupt = Wish("ring", req("http://door/", duration_s=60, revert=True), None, base)
    data = json.loads(json.dumps(to_json(interrupt)))
    assert from_json(Wish, data) == interrupt
