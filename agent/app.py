"""Wiring and lifecycle: everything the agent runs lives in one TaskGroup and ends together."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from contextlib import AsyncExitStack, contextmanager

from loguru import logger

from agent import __version__
from agent.cast.manager import ChromecastManager
from agent.commands import Dispatcher
from agent.config import Settings
from agent.extensions.console import ConsoleGuide
from agent.extensions.homeassistant import HomeAssistantDiscovery
from agent.extensions.snapshot_mqtt import SnapshotPublisher
from agent.stream.address import stream_host
from agent.stream.backend import StreamBackend
from agent.supervisor.session import SessionFactory
from agent.supervisor.supervisor import Supervisor
from agent.transport.mqtt import MqttExtension, MqttTransport
from agent.web.api import WebhookApi

# SIGTERM → exit within 5 s: most of it for the stream to stop, the rest to say goodbye.
STREAM_STOP_BUDGET_S = 3.5
GOODBYE_BUDGET_S = 1.0


@contextmanager
def _stop_on_signals(stop: asyncio.Event) -> Iterator[None]:
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    try:
        yield
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)


async def _open_backend(
    settings: Settings, stack: AsyncExitStack, extensions: list[MqttExtension]
) -> tuple[StreamBackend, SessionFactory]:
    """The real streams: casting, then the pipeline (HTTP server, browser) that uses it.

    Returned un-entered so that HTTP routes can be added first; the caller enters it.
    """
    cast = await stack.enter_async_context(ChromecastManager(settings.cast))
    backend = StreamBackend(settings, cast)
    if settings.snapshot.mqtt:
        extensions.append(SnapshotPublisher(backend.snapshots, backend.latest_snapshot))
    return backend, backend.create_session


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
        # Always there: disabled, it withdraws the device from Home Assistant.
        extensions: list[MqttExtension] = [HomeAssistantDiscovery(settings)]
        backend: StreamBackend | None = None
        if session_factory is None:
            backend, session_factory = await _open_backend(settings, stack, extensions)
        supervisor = Supervisor(session_factory)
        dispatcher = Dispatcher(supervisor, settings)
        if backend is not None:
            if settings.api.enabled:
                backend.web.add_routes(WebhookApi(settings.api, dispatcher, supervisor).routes())
            await stack.enter_async_context(backend)
            host = stream_host(settings.stream.public_host, None)
            guide: ConsoleGuide | None = ConsoleGuide(
                f"http://{host}:{backend.web.port}", supervisor
            )
        else:
            guide = None
        transport = MqttTransport(settings, supervisor, dispatcher, extensions=extensions)
        logger.info("pagecast {} starting as {}", __version__, settings.topic_root)
        async with asyncio.TaskGroup() as tg:
            supervising = tg.create_task(supervisor.run(), name="supervisor")
            serving = tg.create_task(transport.run(), name="mqtt")
            if guide is not None:
                guide.announce()
                guiding = tg.create_task(guide.run(), name="console")
            await stop_requested.wait()
            logger.info("shutting down")
            try:
                await asyncio.wait_for(supervisor.shutdown(), STREAM_STOP_BUDGET_S)
            except TimeoutError:
                logger.warning("the stream did not stop within {} s", STREAM_STOP_BUDGET_S)
            try:
                await asyncio.wait_for(transport.close(), GOODBYE_BUDGET_S)
            except TimeoutError:
                logger.warning("could not say goodbye on MQTT in time")
                serving.cancel()
            supervising.cancel()
            if guide is not None:
                guiding.cancel()
    logger.info("stopped")
