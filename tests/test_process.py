"""A cancellation never separates a child process from its owner.

``stop()`` cancels a self-healing restart at any moment, also while ffmpeg, Xvfb or Chromium is
being started: whatever was already started must be ended and reaped before the cancellation
goes on, not left running until the agent exits. The spawns under test are real (``sleep``
with a duration no other process uses, real Xvfb and Chromium); only the moment of the
cancellation is pinned down, by holding the start open right after the child came up.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser as PlaywrightBrowser
from playwright.async_api import BrowserType, Playwright, async_playwright
from support.procs import Proc, chromium_browser, descendants
from support.streaming import until

from agent.config import BrowserSettings
from agent.stream import display as display_module
from agent.stream.browser import Browser, Geometry
from agent.stream.display import Display
from agent.stream.process import ChildProcess

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def duration() -> Iterator[str]:
    """A ``sleep`` argument unique to this test; its processes are killed if the test fails."""
    value = f"30.{uuid.uuid4().int % 10**9:09d}"
    yield value
    for proc in sleeping(value):
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)


def sleeping(duration: str) -> list[Proc]:
    return [p for p in descendants() if p.cmdline == f"sleep {duration}"]


def gone(pid: int, returncode: int | None) -> bool:
    """Ended and reaped: not merely signalled, and not left a zombie."""
    # Not the exact code: asyncio's child watcher may report a reaped SIGKILLed child as 255.
    return returncode is not None and not Path(f"/proc/{pid}").exists()


@pytest.fixture
async def held_spawn(monkeypatch: pytest.MonkeyPatch) -> tuple[asyncio.Future[Any], asyncio.Event]:
    """Holds every spawn open after the fork: (the process once forked, the gate to let go)."""
    real = asyncio.create_subprocess_exec
    forked: asyncio.Future[asyncio.subprocess.Process] = asyncio.get_running_loop().create_future()
    gate = asyncio.Event()

    async def spawn_and_hold(*args: Any, **kwargs: Any) -> asyncio.subprocess.Process:
        process = await real(*args, **kwargs)
        forked.set_result(process)
        await gate.wait()  # the child runs, the spawn has not returned: cancel here
        return process

    monkeypatch.setattr(asyncio, "create_subprocess_exec", spawn_and_hold)
    return forked, gate


@pytest.mark.parametrize("cancellations", [1, 2])
async def test_a_spawn_cancelled_after_the_fork_ends_and_reaps_the_child(
    held_spawn: tuple[asyncio.Future[asyncio.subprocess.Process], asyncio.Event],
    duration: str,
    cancellations: int,
) -> None:
    forked, gate = held_spawn
    spawning = asyncio.create_task(ChildProcess.spawn("sleeper", ["sleep", duration]))
    process = await forked
    assert sleeping(duration)
    for _ in range(cancellations):  # a second one arrives while the first is being handled
        spawning.cancel()
        await asyncio.sleep(0)
    assert not spawning.done()  # the cancellation waits for the child to be ended
    gate.set()
    with pytest.raises(asyncio.CancelledError):
        await spawning
    assert gone(process.pid, process.returncode)
    assert not sleeping(duration)


async def test_a_spawn_cancelled_at_any_step_leaves_no_child(duration: str) -> None:
    """The real spawn, cancelled after 0, 1, 2, ... event-loop steps, once and twice."""
    outcomes = set()
    for steps in range(12):
        for cancellations in (1, 2):
            spawning = asyncio.create_task(ChildProcess.spawn("sleeper", ["sleep", duration]))
            for _ in range(steps):
                await asyncio.sleep(0)
            for _ in range(cancellations):
                spawning.cancel()
                await asyncio.sleep(0)
            try:
                child = await spawning
            except asyncio.CancelledError:
                outcomes.add("cancelled")
            else:
                outcomes.add("started")  # too late to cancel: the owner has it and stops it
                assert child.alive
                await child.stop()
            assert not sleeping(duration), (steps, cancellations)
    assert outcomes == {"cancelled", "started"}  # both sides of the spawn were hit


async def test_a_stop_cancelled_in_the_grace_period_kills(duration: str) -> None:
    child = await ChildProcess.spawn(
        "stubborn", ["sh", "-c", f"trap '' TERM; exec sleep {duration}"]
    )
    await until(lambda: sleeping(duration))  # exec'd, SIGTERM ignored
    stopping = asyncio.create_task(child.stop(grace_s=60))
    await asyncio.sleep(0)  # SIGTERM sent, waiting out the grace period
    stopping.cancel()
    async with asyncio.timeout(10):
        with pytest.raises(asyncio.CancelledError):
            await stopping
    assert gone(child.pid, child.returncode)
    assert not sleeping(duration)


async def test_xvfb_start_cancelled_while_waiting_for_it_stops_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, duration: str
) -> None:
    # An "Xvfb" that never reports its display number: the start waits until cancelled.
    never_ready = tmp_path / "Xvfb"
    never_ready.write_text(f"#!/bin/sh\nexec sleep {duration}\n")
    never_ready.chmod(0o755)
    monkeypatch.setattr(display_module, "XVFB", str(never_ready))
    display = Display(64, 48)
    starting = asyncio.create_task(display.start())
    await until(lambda: sleeping(duration))
    starting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await starting
    assert not display.alive
    assert not sleeping(duration)


class HeldChromium:
    """Playwright's ``chromium`` that holds ``launch`` open once Chromium runs."""

    def __init__(self, real: BrowserType) -> None:
        self._real = real
        self.launched: asyncio.Future[PlaywrightBrowser] = (
            asyncio.get_running_loop().create_future()
        )
        self.gate = asyncio.Event()

    async def launch(self, **kwargs: Any) -> PlaywrightBrowser:
        browser = await self._real.launch(**kwargs)
        self.launched.set_result(browser)
        await self.gate.wait()
        return browser


class HeldPlaywright:
    def __init__(self, real: Playwright) -> None:
        self.chromium = HeldChromium(real.chromium)


@pytest.fixture
async def xvfb() -> AsyncIterator[Display]:
    display = Display(320, 240)
    await display.start()
    try:
        yield display
    finally:
        await display.stop()


async def test_a_chromium_launch_cancelled_midway_is_closed_not_left_to_playwright(
    xvfb: Display,
) -> None:
    marker = f"--pagecast-test={uuid.uuid4().hex}"

    def ours() -> list[Proc]:
        return [p for p in chromium_browser() if marker in p.cmdline]

    async with async_playwright() as playwright:
        held = HeldPlaywright(playwright)
        settings = BrowserSettings(extra_args=[marker])
        browser = Browser(held, settings, xvfb.name, Geometry(320, 240, 1.0, 30))  # type: ignore[arg-type]
        launching = asyncio.create_task(browser.launch())
        await held.chromium.launched
        assert ours()
        launching.cancel()
        await asyncio.sleep(0)
        held.chromium.gate.set()
        with pytest.raises(asyncio.CancelledError):
            await launching
        # Checked while Playwright still runs: its exit would end any Chromium anyway.
        assert not ours()
        assert not browser.alive
