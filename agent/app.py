"""Wiring and lifecycle: everything the agent runs lives in one TaskGroup and ends together.

Start-up: MQTT comes up whatever else does (a backend that cannot start is shown on MQTT and
retried, agent/startup.py), and the saved wish is resumed (agent/wish.py). Shutdown: one
deadline from the signal on; the stream gets most of it, the goodbye on MQTT the rest, and a
child process that has not stopped by then is killed with its process group.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass
from typing import NoReturn

from loguru import logger

from agent import __version__
from agent.cast.manager import ChromecastManager
from agent.commands import Dispatcher
from agent.config import Settings
from agent.extensions.console import ConsoleGuide
from agent.extensions.homeassistant import HomeAssistantDiscovery
from agent.extensions.snapshot_mqtt import SnapshotPublisher
from agent.health import Health, mqtt_probe, segment_probe, startup_probe, task_probe
from agent.startup import BackendKeeper
from agent.stream.address import stream_host
from agent.stream.backend import StreamBackend
from agent.stream.process import kill_all_children
from agent.supervisor.session import SessionFactory
from agent.supervisor.supervisor import Supervisor, Wish
from agent.transport.mqtt import MqttExtension, MqttTransport
from agent.web.api import WebhookApi
from agent.wish import WishFile, WishKeeper

# SIGTERM → exit 0 within 5 s, also with a TV that does not answer and on a loaded machine.
# The margin to 5 s is for the signal reaching a busy event loop and the process's exit.
SHUTDOWN_BUDGET_S = 3.4  # from the signal until the goodbye on MQTT is done
GOODBYE_BUDGET_S = 1.0  # the end of that budget, kept for the last status and "offline"
WISH_BUDGET_S = 0.5  # the start of it, for the last change of the wish to reach the disk
FORCED_EXIT_S = 4.2  # the process ends by then, even if a thread or a child still hangs
# A resumed wish waits this long for MQTT so that ``resumed`` is seen; not longer: a screen
# must come back after a power cut even while the broker is still down.
RESUME_WAITS_FOR_MQTT_S = 5.0


def end_process(code: int) -> NoReturn:
    """Exit at once, after the logs: once the agent has stopped, the interpreter's teardown of
    its many modules only costs time (a second on a loaded machine) and a ``docker stop``
    must not wait for it."""
    logger.complete()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)


def _force_exit() -> None:
    # Runs in a watchdog thread: the event loop may be what hangs.
    killed = kill_all_children()
    logger.error("shutdown overran {} s: forced exit (killed {})", FORCED_EXIT_S, killed)
    end_process(0)


@contextmanager
def _stop_on_signals(stop: asyncio.Event) -> Iterator[None]:
    """SIGTERM/SIGINT set ``stop`` and arm the watchdog that ends an overrunning shutdown.

    The watchdog stays armed after this block: the exit itself (worker threads blocked in a
    device call, the interpreter's teardown) must be within the bound too.
    """
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT)
    watchdog = threading.Timer(FORCED_EXIT_S, _force_exit)
    watchdog.daemon = True

    def on_signal() -> None:
        stop.set()
        if not watchdog.is_alive():
            watchdog.start()

    for sig in signals:
        loop.add_signal_handler(sig, on_signal)
    try:
        yield
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)


@dataclass
class _Agent:
    settings: Settings
    supervisor: Supervisor
    transport: MqttTransport
    wishes: WishKeeper
    health: Health
    keeper: BackendKeeper | None  # None: a test's session factory instead of the pipeline


async def _wire(
    settings: Settings, stack: AsyncExitStack, session_factory: SessionFactory | None
) -> _Agent:
    # Always there: disabled, it withdraws the device from Home Assistant.
    extensions: list[MqttExtension] = [HomeAssistantDiscovery(settings)]
    keeper: BackendKeeper | None = None
    if session_factory is None:
        cast = await stack.enter_async_context(ChromecastManager(settings.cast))
        keeper = BackendKeeper(lambda report: StreamBackend(settings, cast, on_fault=report))
        # Left when the TaskGroup is over, so after the supervisor stopped its session.
        stack.push_async_callback(keeper.close)
        session_factory = keeper.create_session
        if settings.snapshot.mqtt:
            backend = keeper.backend
            extensions.append(SnapshotPublisher(backend.snapshots, backend.latest_snapshot))
    supervisor = Supervisor(session_factory)
    if keeper is not None:
        keeper.show_fault = supervisor.set_fault
    dispatcher = Dispatcher(supervisor, settings)
    transport = MqttTransport(settings, supervisor, dispatcher, extensions=extensions)
    changes = stack.enter_context(supervisor.wish_changes.subscribe())
    wishes = WishKeeper(WishFile(settings.state_dir, settings.node_id), changes)
    health = Health(
        [
            mqtt_probe(transport, settings.mqtt.health_grace_s),
            segment_probe(supervisor, settings.stream.stall_after_s),
        ]
    )
    if keeper is not None:
        _serve_http(settings, keeper, health, dispatcher, supervisor)
    return _Agent(settings, supervisor, transport, wishes, health, keeper)


def _serve_http(
    settings: Settings,
    keeper: BackendKeeper,
    health: Health,
    dispatcher: Dispatcher,
    supervisor: Supervisor,
) -> None:
    """Routes on the backend's HTTP server, before it starts: /healthz, the webhook."""
    health.add(startup_probe(lambda: keeper.fault))
    web = keeper.backend.web
    if settings.api.enabled:
        web.add_routes(WebhookApi(settings.api, dispatcher, supervisor).routes())
    web.set_health_source(health.report)


async def _bring_up_backend(agent: _Agent) -> None:
    """Enter the backend (retrying until it works), then tell the console where to look."""
    keeper = agent.keeper
    assert keeper is not None
    await keeper.run()
    host = stream_host(agent.settings.stream.public_host, None)
    guide = ConsoleGuide(f"http://{host}:{keeper.backend.web.port}", agent.supervisor)
    guide.announce()
    await guide.run()


async def _resume(agent: _Agent) -> None:
    """Put the saved wish back on screen, unless its time is up or a command came first."""
    wish = await agent.wishes.load(Wish)
    if wish is None:
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(agent.transport.online.wait(), RESUME_WAITS_FOR_MQTT_S)
    if agent.supervisor.wish is not None:
        return  # a start command arrived meanwhile: it is newer
    # An interrupt comes back with its way back, or gives way to its base if its time is up.
    outcome = agent.supervisor.resume(wish)
    if outcome is None:
        logger.info("the saved wish (session {}) ended while we were away", wish.session_id)
        agent.wishes.forget()
        return
    logger.bind(session_id=outcome.session_id).info("resuming the saved wish")


async def run_agent(
    settings: Settings,
    *,
    session_factory: SessionFactory | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Run until SIGTERM/SIGINT (or until ``stop`` is set, when given), then shut down cleanly.

    ``session_factory`` replaces the real stream backend (tests drive a double through it).
    """
    stop_requested = stop or asyncio.Event()
    async with AsyncExitStack() as stack:
        if stop is None:
            stack.enter_context(_stop_on_signals(stop_requested))
        agent = await _wire(settings, stack, session_factory)
        logger.info("pagecast {} starting as {}", __version__, settings.topic_root)
        async with asyncio.TaskGroup() as tg:
            supervising = tg.create_task(agent.supervisor.run(), name="supervisor")
            agent.health.add(task_probe("supervisor", lambda: not supervising.done()))
            serving = tg.create_task(agent.transport.run(), name="mqtt")
            persisting = tg.create_task(agent.wishes.run(), name="wish")
            background = [tg.create_task(_resume(agent), name="resume")]
            if agent.keeper is not None:
                background.append(tg.create_task(_bring_up_backend(agent), name="backend"))
            await stop_requested.wait()
            logger.info("shutting down")
            for task in background:
                task.cancel()
            await _shut_down(agent, persisting, serving)
            supervising.cancel()
    logger.info("stopped")


async def _shut_down(
    agent: _Agent, persisting: asyncio.Task[None], serving: asyncio.Task[None]
) -> None:
    """Within SHUTDOWN_BUDGET_S: keep the wish, stop the stream, say goodbye on MQTT."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SHUTDOWN_BUDGET_S
    # The wish is kept for the next start: stop writing before the stream stop clears it.
    persisting.cancel()
    await asyncio.wait([persisting], timeout=WISH_BUDGET_S)
    if not await agent.supervisor.shutdown(deadline - GOODBYE_BUDGET_S):
        killed = kill_all_children()
        logger.warning("killed what did not stop in time: {}", ", ".join(killed) or "nothing")
    try:
        async with asyncio.timeout_at(deadline):
            await agent.transport.close()
    except TimeoutError:
        logger.warning("could not say goodbye on MQTT in time")
        serving.cancel()
