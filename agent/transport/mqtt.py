"""The MQTT adapter: broker messages → Dispatcher, supervisor status/events → broker.

One connection at a time, re-entered forever with backoff. On every connect the agent's own
state is republished (status, info, heartbeat, extensions, then ``online`` last); nothing is
ever restored from the broker. Clean session, so a command sent while we were away is gone.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import Sequence
from contextlib import suppress
from typing import Protocol

import aiomqtt
import paho.mqtt.client as mqtt_client
from loguru import logger
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from agent.cancellation import reraise_lost_cancel
from agent.commands import Dispatcher, Response
from agent.config import MqttSettings, Settings, TlsSettings
from agent.heartbeat import Heartbeat, info_payload
from agent.retry import Backoff
from agent.supervisor.state import Event, Status
from agent.supervisor.supervisor import Supervisor
from agent.transport.base import PayloadLike, Publisher, encode
from agent.transport.topics import Topics

ONLINE = "online"
OFFLINE = "offline"


class MqttExtension(Protocol):
    """A capability that rides on the agent's MQTT connection (HA discovery, snapshots...).

    It observes the supervisor by itself (its constructor gets what it needs) and talks to
    the broker only through the Publisher, so the adapter stays a thin adapter.
    """

    @property
    def name(self) -> str:
        """Listed in ``info.capabilities``."""

    def subscriptions(self) -> Sequence[str]:
        """Topic filters this extension wants; matching messages go to on_message only."""

    async def on_connect(self, publisher: Publisher) -> None:
        """After status/info/heartbeat are republished and before ``online``."""

    async def on_message(self, topic: str, payload: bytes, publisher: Publisher) -> None: ...

    async def run(self, publisher: Publisher) -> None:
        """Lives as long as the adapter, across reconnects; cancelled on close."""


def tls_context(tls: TlsSettings) -> ssl.SSLContext | None:
    if not tls.enabled:
        return None
    context = ssl.create_default_context(cafile=str(tls.ca_certs) if tls.ca_certs else None)
    if tls.certfile:
        context.load_cert_chain(str(tls.certfile), str(tls.keyfile) if tls.keyfile else None)
    if tls.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class MqttTransport:
    def __init__(
        self,
        settings: Settings,
        supervisor: Supervisor,
        dispatcher: Dispatcher,
        *,
        extensions: Sequence[MqttExtension] = (),
    ) -> None:
        self._settings = settings
        self._mqtt: MqttSettings = settings.mqtt
        self._v5 = settings.mqtt.protocol == "5"
        self._supervisor = supervisor
        self._dispatcher = dispatcher
        self._extensions = tuple(extensions)
        self._topics = Topics.of(settings)
        self._heartbeat = Heartbeat(supervisor)
        self._tls = tls_context(settings.mqtt.tls)
        self._client: aiomqtt.Client | None = None
        self._connections = 0
        # Since when the broker is out of reach (for /healthz); the agent starts without it.
        self._down_since: float | None = time.monotonic()
        # Set once status and info are out and ``online`` is published, cleared on a loss.
        self.online = asyncio.Event()
        self._closing = asyncio.Event()
        self._closed = asyncio.Event()

    # -- Publisher (what extensions get) -------------------------------------------------------

    @property
    def topics(self) -> Topics:
        return self._topics

    @property
    def connected(self) -> bool:
        return self._client is not None

    @property
    def down_since(self) -> float | None:
        """``time.monotonic()`` when the broker was last lost; None while connected."""
        return self._down_since

    @property
    def reconnects(self) -> int:
        return max(self._connections - 1, 0)

    async def publish(
        self, topic: str, payload: PayloadLike, *, retain: bool = False, qos: int = 1
    ) -> bool:
        client = self._client
        if client is None:
            return False
        try:
            await client.publish(topic, encode(payload), qos=qos, retain=retain)
        except aiomqtt.MqttError as exc:
            logger.debug("publish to {} failed: {}", topic, exc)
            return False
        return True

    async def republish(self) -> None:
        client = self._client
        if client is None:
            return
        try:
            await self._announce(client)
        except aiomqtt.MqttError as exc:
            # The connection broke meanwhile; the reconnect announces everything anyway.
            logger.debug("republish failed: {}", exc)

    # -- lifecycle -----------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as tg:
                extension_tasks = [tg.create_task(self._run(ext)) for ext in self._extensions]
                await self._connect_forever()
                for task in extension_tasks:
                    task.cancel()
        finally:
            self._closed.set()

    async def _run(self, extension: MqttExtension) -> None:
        try:
            await extension.run(self)
        except Exception:
            # A broken extension loses its feature, not the agent its control plane.
            logger.exception("extension {} stopped", extension.name)

    async def close(self) -> None:
        self._closing.set()
        await self._closed.wait()

    async def _connect_forever(self) -> None:
        backoff = Backoff(self._mqtt.reconnect_min_s, self._mqtt.reconnect_max_s)
        while not self._closing.is_set():
            connections = self._connections
            try:
                await self._session()
            except* aiomqtt.MqttError as group:
                what = "connection lost" if self._connections != connections else "connect failed"
                reason = "; ".join(str(exc) for exc in group.exceptions)
                logger.warning(
                    "MQTT {} ({}:{}): {}", what, self._mqtt.host, self._mqtt.port, reason
                )
            finally:
                self._client = None
                self.online.clear()
                if self._down_since is None:
                    self._down_since = time.monotonic()
            if self._closing.is_set():
                return
            if self._connections != connections:
                backoff.reset()
            delay = backoff.next()
            logger.info("reconnecting to MQTT in {:.1f} s", delay)
            with suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), delay)

    def _new_client(self) -> aiomqtt.Client:
        mqtt = self._mqtt
        return aiomqtt.Client(
            mqtt.host,
            mqtt.port,
            # Fixed per node: a restarted agent takes over its stale connection at once, so
            # the old one's will ("offline") fires before our "online", not after it.
            identifier=f"pagecast-{self._settings.node_id}",
            username=mqtt.username,
            password=mqtt.password.get_secret_value() if mqtt.password else None,
            protocol=aiomqtt.ProtocolVersion.V5 if self._v5 else aiomqtt.ProtocolVersion.V311,
            will=aiomqtt.Will(self._topics.availability, OFFLINE, qos=1, retain=True),
            # Clean session (3.1.1) / clean start (5): a start queued while we were away must
            # not run when we come back.
            clean_session=None if self._v5 else True,
            clean_start=True if self._v5 else mqtt_client.MQTT_CLEAN_START_FIRST_ONLY,
            keepalive=mqtt.keepalive,
            tls_context=self._tls,
            timeout=10,
            # Commands and responses are tiny: without this, Nagle's algorithm meeting the
            # broker's delayed ACK holds each one back ~40 ms.
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        )

    async def _session(self) -> None:
        """One connection: subscribe, announce, serve until it breaks or close() is called."""
        client = self._new_client()
        async with client:
            self._connections += 1
            logger.info(
                "MQTT connected to {}:{} as {} (reconnects: {})",
                self._mqtt.host,
                self._mqtt.port,
                self._topics.root,
                self.reconnects,
            )
            with (
                self._supervisor.status_changes.subscribe() as statuses,
                self._supervisor.events.subscribe() as events,
            ):
                await self._subscribe(client)
                self._client = client
                self._down_since = None
                await self._announce(client)
                self.online.set()
                async with asyncio.TaskGroup() as tg:
                    receiving = tg.create_task(self._receive(client))
                    beating = tg.create_task(self._beat(client))
                    # Returns on close(), once everything the supervisor said is published.
                    await tg.create_task(self._forward(client, statuses, events))
                    receiving.cancel()
                    beating.cancel()
                await self._goodbye(client)

    async def _subscribe(self, client: aiomqtt.Client) -> None:
        commands = self._topics.command_filters()
        if self._v5:
            # Retained commands are stale by definition: ask the broker not to send them, and
            # keep the retain flag on live ones so that _on_message can refuse those too.
            options = SubscribeOptions(
                qos=1,
                retainAsPublished=True,
                retainHandling=SubscribeOptions.RETAIN_DO_NOT_SEND,
            )
            await client.subscribe([(topic, options) for topic in commands])
        else:
            await client.subscribe([(topic, 1) for topic in commands])
        extra = [topic for ext in self._extensions for topic in ext.subscriptions()]
        if extra:
            await client.subscribe([(topic, 1) for topic in extra])

    async def _announce(self, client: aiomqtt.Client) -> None:
        await self._publish_status(client, self._supervisor.status)
        await self._publish_info(client)
        await self._publish_heartbeat(client)
        for ext in self._extensions:
            try:
                await ext.on_connect(self)
            except Exception:
                logger.exception("extension {} failed on connect", ext.name)
        await client.publish(self._topics.availability, ONLINE, qos=1, retain=True)

    async def _goodbye(self, client: aiomqtt.Client) -> None:
        # The will only fires on an unclean disconnect; a clean one must say so itself.
        await self._publish_status(client, self._supervisor.status)
        await client.publish(self._topics.availability, OFFLINE, qos=1, retain=True)
        logger.info("MQTT: published offline, disconnecting")

    # -- outbound ------------------------------------------------------------------------------

    async def _publish_status(self, client: aiomqtt.Client, status: Status) -> None:
        await client.publish(self._topics.status, encode(status.to_payload()), qos=1, retain=True)

    async def _publish_info(self, client: aiomqtt.Client) -> None:
        info = info_payload(self._settings, (ext.name for ext in self._extensions))
        await client.publish(self._topics.info, encode(info), qos=1, retain=True)

    async def _publish_heartbeat(self, client: aiomqtt.Client) -> None:
        beat = self._heartbeat.payload(mqtt_reconnects=self.reconnects)
        await client.publish(self._topics.heartbeat, encode(beat), qos=0, retain=True)

    async def _forward(
        self,
        client: aiomqtt.Client,
        statuses: asyncio.Queue[Status],
        events: asyncio.Queue[Event],
    ) -> None:
        """Publish every status change and event, in the order the supervisor made them,
        until close() and nothing is left (the ``stopped`` of a shutdown must get out).

        The supervisor sets a status before it emits the event about it, so pending statuses
        go first: whoever reacts to ``started`` already finds ``streaming`` on ``~/status``.
        """
        next_status = asyncio.ensure_future(statuses.get())
        next_event = asyncio.ensure_future(events.get())
        closing = asyncio.ensure_future(self._closing.wait())
        try:
            while True:
                await asyncio.wait(
                    (next_status, next_event, closing), return_when=asyncio.FIRST_COMPLETED
                )
                if next_status.done():
                    status, next_status = (
                        next_status.result(),
                        asyncio.ensure_future(statuses.get()),
                    )
                    await self._publish_status(client, status)
                elif next_event.done():
                    event, next_event = next_event.result(), asyncio.ensure_future(events.get())
                    await client.publish(self._topics.event, encode(event.to_payload()), qos=1)
                elif statuses.empty() and events.empty():
                    return  # closing and drained (an item a getter has yet to take still counts)
                reraise_lost_cancel()
        finally:
            for waiter in (next_status, next_event, closing):
                waiter.cancel()

    async def _beat(self, client: aiomqtt.Client) -> None:
        while True:
            await asyncio.sleep(self._mqtt.heartbeat_interval)
            await self._heartbeat.measure()
            await self._publish_heartbeat(client)
            reraise_lost_cancel()

    # -- inbound -------------------------------------------------------------------------------

    async def _receive(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            await self._on_message(client, message)
            reraise_lost_cancel()

    async def _on_message(self, client: aiomqtt.Client, message: aiomqtt.Message) -> None:
        topic = message.topic.value
        payload = message.payload if isinstance(message.payload, bytes) else b""
        for ext in self._extensions:
            if any(message.topic.matches(f) for f in ext.subscriptions()):
                try:
                    await ext.on_message(topic, payload, self)
                except Exception:
                    logger.exception("extension {} failed on {}", ext.name, topic)
                return
        command = self._topics.command_of(topic)
        if command is None:
            return
        if message.retain:
            logger.warning(
                "dropped a retained command on {} (clear it: mosquitto_pub -r -n -t {})",
                topic,
                topic,
            )
            return
        response = await self._dispatcher.handle(command, payload, source=f"mqtt:{topic}")
        await self._reply(client, response, message.properties)
        if command == "status":
            await self._publish_status(client, self._supervisor.status)
            await self._publish_info(client)

    async def _reply(
        self, client: aiomqtt.Client, response: Response, request: Properties | None
    ) -> None:
        body = encode(response.to_payload())
        properties: Properties | None = None
        response_topic: str | None = None
        if self._v5 and request is not None:
            response_topic = getattr(request, "ResponseTopic", None)
            correlation = getattr(request, "CorrelationData", None)
            if correlation is not None:
                properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
                properties.CorrelationData = correlation
        await client.publish(
            self._topics.response(response.command), body, qos=1, properties=properties
        )
        if response_topic and _publishable(response_topic):
            await client.publish(response_topic, body, qos=1, properties=properties)
        elif response_topic:
            logger.warning("ignored unusable MQTT v5 response topic {!r}", response_topic)


def _publishable(topic: str) -> bool:
    return not any(ch in topic for ch in "+#\0") and 0 < len(topic.encode()) < 65536
