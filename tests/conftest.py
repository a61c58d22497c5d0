"""Shared fixtures: a real mosquitto per test, agent settings for it, and a running agent.

``mosquitto``: a broker on a free port (``.kill()``, ``.start()`` again on the same port).
``agent_settings(**overrides)``: Settings pointing at that broker with a unique node id.
``start_agent(settings, session_factory=None, **probe_options)``: the real agent in-process
(session double by default), yielded once it announced ``online`` (watched by a client made
with ``probe_options``, e.g. TLS); stopped cleanly at the end of the block.
``agent``: one such agent with default settings (``agent.root`` is its ``~``).
Every test fails if a process it started is still running a few seconds after it ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support.agent_double import DoubleFactory, RunningAgent
from support.mqtt import Mosquitto, probe
from support.procs import descendants
from support.settings import merge

from agent.app import run_agent
from agent.config import Settings
from agent.supervisor.session import SessionFactory

# The fake Cast device and a tiny live HLS stream (tests/fakecast); local test pages; the
# image built on a real Docker engine (skipped without one).
pytest_plugins = ["fakecast.fixtures", "support.pages", "support.containers"]


# How long a child may take to exit after its test ended (a driver, a browser closing).
LEAK_GRACE_S = 10.0


@pytest.fixture(autouse=True)
def nothing_outlives_the_test() -> Iterator[None]:
    """Every process a test started, directly or through the agent, is gone when it ends.

    Autouse, so set up first and checked last, after the test's own fixtures stopped what
    they started. A leftover is killed, so that one leak fails one test, not the ones after.
    """
    before = {proc.pid for proc in descendants()}
    yield
    deadline = time.monotonic() + LEAK_GRACE_S
    while left := [proc for proc in descendants() if proc.pid not in before]:
        if time.monotonic() > deadline:
            for proc in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
            pytest.fail(f"left running: {[(proc.pid, proc.cmdline[:120]) for proc in left]}")
        time.sleep(0.1)


@pytest.fixture(autouse=True)
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test keeps its agents' wishes (agent/wish.py) apart from the user's and the others'."""
    directory = tmp_path / "state"
    monkeypatch.setenv("PAGECAST_STATE_DIR", str(directory))
    return directory


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    directory = tmp_path / "mosquitto"
    directory.mkdir()
    broker = Mosquitto(directory)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def agent_settings(mosquitto: Mosquitto) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        base = {
            "node_id": f"t-{uuid.uuid4().hex[:8]}",
            "mqtt": {"host": "127.0.0.1", "port": mosquitto.port, "heartbeat_interval": 30},
            "cast": {"device": "none"},
            "homeassistant": {"enabled": False},
        }
        return Settings(**merge(base, overrides))

    return make


StartAgent = Callable[..., contextlib.AbstractAsyncContextManager[RunningAgent]]


@pytest.fixture
def start_agent() -> StartAgent:
    @contextlib.asynccontextmanager
    async def start(
        settings: Settings, session_factory: SessionFactory | None = None, **probe_options: Any
    ) -> AsyncIterator[RunningAgent]:
        factory = session_factory or DoubleFactory()
        stop = asyncio.Event()
        watching = f"{settings.topic_root}/availability"
        async with probe(settings.mqtt.port, watching, **probe_options) as watch:
            task = asyncio.create_task(run_agent(settings, session_factory=factory, stop=stop))
            running = RunningAgent(settings, factory, task, stop)
            try:
                waiter = asyncio.ensure_future(
                    watch.wait_for(
                        f"{settings.topic_root}/availability",
                        lambda m: m.payload == b"online",
                        within=10,
                    )
                )
                await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
                if task.done():
                    waiter.cancel()
                    task.result()  # the agent died while starting: show why
                    raise AssertionError("the agent exited before it came online")
                await waiter
            except BaseException:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
                raise
        try:
            yield running
        finally:
            if not task.done():
                await running.stop()
            else:
                task.result()

    return start


@pytest.fixture
async def agent(
    agent_settings: Callable[..., Settings], start_agent: StartAgent
) -> AsyncIterator[RunningAgent]:
    async with start_agent(agent_settings()) as running:
        yield running
