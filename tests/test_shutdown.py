"""The pieces of a bounded shutdown (issue 8.7) and of a fault shown while idle (issue 11.3);
the whole of it runs as a process in tests/test_restart.py."""

from __future__ import annotations

import asyncio
from pathlib import Path

from support.procs import descendants
from test_supervisor import Harness, harness, req  # noqa: F401  (fixture re-used)

from agent.errors import ErrorCode, ErrorInfo, PagecastError
from agent.stream.process import ChildProcess, kill_all_children
from agent.supervisor.state import State


async def test_a_shutdown_that_overruns_its_deadline_still_ends_idle(
    harness: Harness,  # noqa: F811
) -> None:
    supervisor = harness.supervisor
    supervisor.start(req())
    await harness.settle()
    (session,) = harness.factory.sessions
    hung = asyncio.Event()

    async def stop_that_hangs(successor: object = None, deadline: float | None = None) -> None:
        session.calls.append("stop")
        try:
            await hung.wait()  # a TV that never answers
        finally:
            session.alive = False

    session.stop = stop_that_hangs  # type: ignore[method-assign]
    loop = asyncio.get_running_loop()
    began = loop.time()
    stopped = await supervisor.shutdown(began + 0.3)
    took = loop.time() - began
    assert not stopped
    assert 0.3 <= took < 1.0
    assert supervisor.status.state is State.IDLE
    # The teardown was bounded by the same deadline: the session's stop was cancelled.
    await harness.settle()
    assert not session.alive


async def test_a_shutdown_in_time_says_so(harness: Harness) -> None:  # noqa: F811
    harness.supervisor.start(req())
    await harness.settle()
    loop = asyncio.get_running_loop()
    assert await harness.supervisor.shutdown(loop.time() + 5)
    assert harness.supervisor.status.state is State.IDLE


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


async def test_children_left_at_the_deadline_are_killed_with_their_group() -> None:
    # The child starts a grandchild in its own process group: both must go.
    child = await ChildProcess.spawn("stubborn", ["sh", "-c", "trap '' TERM; sleep 60 & wait"])
    try:
        for _ in range(100):  # until the shell has forked its sleep
            grandchildren = [p.pid for p in descendants(child.pid)]
            if grandchildren:
                break
            await asyncio.sleep(0.02)
        assert grandchildren
        assert "stubborn" in kill_all_children()
        for _ in range(250):  # it ignores SIGTERM: only the SIGKILL ends it
            if not child.alive:
                break
            await asyncio.sleep(0.02)
        assert not child.alive
    finally:
        await child.stop(grace_s=0)
    for _ in range(100):  # the grandchild is another parent's to reap now
        if not [pid for pid in grandchildren if _running(pid)]:
            break
        await asyncio.sleep(0.02)
    assert not [pid for pid in grandchildren if _running(pid)], "the grandchild lives"
    assert "stubborn" not in kill_all_children(), "a reaped child is forgotten"


async def test_a_fault_shows_while_idle_and_clears(harness: Harness) -> None:  # noqa: F811
    supervisor = harness.supervisor
    fault = ErrorInfo(ErrorCode.PIPELINE_FAILED, "the browser cannot start: no libatomic")
    supervisor.set_fault(fault)
    assert supervisor.status.state is State.ERROR
    assert supervisor.status.error == fault
    supervisor.set_fault(None)
    assert supervisor.status.state is State.IDLE
    assert supervisor.status.error is None


async def test_a_fault_does_not_hide_a_stream_nor_a_failed_start(
    harness: Harness,  # noqa: F811
) -> None:
    supervisor = harness.supervisor
    supervisor.start(req())
    await harness.settle()
    fault = ErrorInfo(ErrorCode.PIPELINE_FAILED, "the browser cannot start: boom")
    supervisor.set_fault(fault)
    assert supervisor.status.state is State.STREAMING
    supervisor.stop()
    await harness.settle()
    assert (supervisor.status.state, supervisor.status.error) == (State.ERROR, fault)
    harness.factory.fail_with = PagecastError(ErrorCode.PAGE_LOAD_FAILED, "404")
    supervisor.start(req("http://b/"))
    await harness.settle()
    assert supervisor.status.error is not None
    assert supervisor.status.error.code is ErrorCode.PAGE_LOAD_FAILED
    supervisor.set_fault(None)  # the browser works again; the failed start stays visible
    assert supervisor.status.error.code is ErrorCode.PAGE_LOAD_FAILED
