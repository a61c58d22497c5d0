"""The agent wired for tests that talk to it over MQTT and HTTP.

``running``: the agent's parts (supervisor, dispatcher, MQTT transport, webhook) with the
stream-session double in place of the pipeline. ``real_agent``: the agent exactly as
``pagecast run`` runs it. Both yield once the agent announced ``online``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from agent.app import run_agent
from agent.commands import Dispatcher
from agent.config import Settings
from agent.supervisor.supervisor import Supervisor
from agent.transport.mqtt import MqttExtension, MqttTransport
from agent.web.api import WebhookApi
from agent.web.server import WebServer
from support.agent_double import DoubleFactory
from support.mqtt import Mosquitto, Probe, probe

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class Agent:
    base: str  # the HTTP server
    root: str  # ~ on MQTT
    mqtt: Probe
    factory: DoubleFactory
    http: aiohttp.ClientSession

    async def call(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, Any]]:
        data = body if isinstance(body, str | bytes) or body is None else json.dumps(body)
        async with self.http.request(
            method, f"{self.base}{path}", data=data, headers=AUTH if headers is None else headers
        ) as response:
            return response.status, await response.json()


@contextlib.asynccontextmanager
async def running(
    settings: Settings,
    broker: Mosquitto,
    extensions: Sequence[MqttExtension] = (),
    also_watch: Sequence[str] = (),
) -> AsyncIterator[Agent]:
    """The agent's parts wired as the agent wires them, with the webhook always mounted.

    ``mqtt`` is a client watching ``~/#`` and ``also_watch``, subscribed before the agent
    connects, so it sees every message the agent publishes.
    """
    factory = DoubleFactory()
    supervisor = Supervisor(factory)
    dispatcher = Dispatcher(supervisor, settings)
    transport = MqttTransport(settings, supervisor, dispatcher, extensions=extensions)
    web = WebServer("127.0.0.1", 0)
    web.add_routes(WebhookApi(settings.api, dispatcher, supervisor).routes())
    root = settings.topic_root
    await web.start()
    try:
        async with (
            probe(broker.port, f"{root}/#", *also_watch) as client,
            aiohttp.ClientSession() as http,
            asyncio.TaskGroup() as tg,
        ):
            supervising = tg.create_task(supervisor.run())
            tg.create_task(transport.run())
            await client.wait_for(f"{root}/availability", lambda m: m.payload == b"online")
            try:
                yield Agent(f"http://127.0.0.1:{web.port}", root, client, factory, http)
            finally:
                await supervisor.shutdown()
                await transport.close()
                supervising.cancel()
    finally:
        await web.stop()


@contextlib.asynccontextmanager
async def real_agent(settings: Settings, also_watch: Sequence[str] = ()) -> AsyncIterator[Probe]:
    """The agent exactly as ``pagecast run`` runs it (real pipeline, extensions, webhook).

    Yields a client watching ``~/#`` and ``also_watch`` once the agent is online; stops the
    agent afterwards.
    """
    root = settings.topic_root
    stop = asyncio.Event()
    async with probe(settings.mqtt.port, f"{root}/#", *also_watch) as client:
        task = asyncio.create_task(run_agent(settings, stop=stop))
        online = asyncio.create_task(
            client.wait_for(f"{root}/availability", lambda m: m.payload == b"online", within=30)
        )
        try:
            await asyncio.wait([task, online], return_when=asyncio.FIRST_COMPLETED)
            if task.done():
                task.result()  # the agent died while starting: show why
                raise AssertionError("the agent exited before it came online")
            await online
            yield client
        finally:
            online.cancel()
            stop.set()
            await asyncio.wait_for(task, 15)
