"""A switch whose page does not load keeps the running stream and the previous wish."""

from __future__ import annotations

import asyncio

from test_supervisor import Harness, harness  # noqa: F401 (fixture)

from agent.errors import ErrorCode, PagecastError
from agent.supervisor.session import StreamRequest
from agent.supervisor.state import EventName, State


def req(url: str, duration_s: float | None = None) -> StreamRequest:
    return StreamRequest(url=url, quality="720p", duration_s=duration_s, request_id=url)


async def test_a_failed_switch_keeps_the_stream_and_the_previous_wish(
    harness: Harness,  # noqa: F811
) -> None:
    supervisor = harness.supervisor
    first = supervisor.start(req("http://a/", duration_s=30))
    await harness.settle()
    session = harness.factory.sessions[0]
    ends_at = supervisor.status.ends_at
    assert ends_at is not None

    async def refuse(session_id: str, request: StreamRequest) -> None:
        session.calls.append(f"switch:{request.url}")
        await asyncio.sleep(0)
        raise PagecastError(ErrorCode.PAGE_LOAD_FAILED, f"{request.url}: HTTP 404 Not Found")

    session.switch = refuse  # type: ignore[method-assign]
    failed = supervisor.start(req("http://b/"))
    await harness.settle()

    event = await harness.event(EventName.FAILED)
    assert event.session_id == failed.session_id
    assert event.data["kept_session_id"] == first.session_id
    assert event.data["error"]["code"] == "PAGE_LOAD_FAILED"
    status = supervisor.status
    assert status.state is State.STREAMING
    assert (status.session_id, status.url) == (first.session_id, "http://a/")
    assert status.stream_url == f"http://stream/{first.session_id}"
    assert status.error is not None
    assert status.error.code is ErrorCode.PAGE_LOAD_FAILED
    assert status.request_id == "http://b/"
    # The previous wish stands again, with its end where it was.
    wish = supervisor.wish
    assert wish is not None
    assert (wish.session_id, wish.request.url) == (first.session_id, "http://a/")
    assert status.ends_at is not None
    assert abs((status.ends_at - ends_at).total_seconds()) < 1
    assert session.calls == ["start", "switch:http://b/"]
    assert session.alive

    # The next command is served in place again and clears the error.
    session.switch = type(session).switch.__get__(session)  # type: ignore[method-assign]
    supervisor.start(req("http://c/"))
    await harness.settle()
    assert supervisor.status.url == "http://c/"
    assert supervisor.status.error is None
    assert session.calls[-1] == "switch:http://c/"
