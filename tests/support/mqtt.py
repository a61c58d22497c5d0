"""Test plumbing for the MQTT side: a real mosquitto, a probe client, a cuttable TCP link."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

MOSQUITTO = "/usr/sbin/mosquitto"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing listens on {port}")
        time.sleep(0.01)


class Mosquitto:
    """A real broker on a free port that a test may kill -9 and restart on the same port."""

    def __init__(self, directory: Path, *, listener_opts: str = "", anonymous: bool = True) -> None:
        self.directory = directory
        self.port = free_port()
        self.listener_opts = listener_opts
        self.anonymous = anonymous
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    def start(self) -> None:
        conf = self.directory / "mosquitto.conf"
        conf.write_text(
            # user root: mosquitto would drop to "mosquitto", which cannot read pytest's tmp dirs
            f"user root\nlistener {self.port} 127.0.0.1\n{self.listener_opts}\n"
            f"allow_anonymous {str(self.anonymous).lower()}\npersistence false\n"
            "log_dest stderr\nlog_type all\n"
            "max_queued_messages 100000\n"
        )
        for _ in range(50):
            with (self.directory / "mosquitto.log").open("ab") as log:
                self.process = subprocess.Popen(
                    [MOSQUITTO, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT
                )
            with contextlib.suppress(TimeoutError):
                wait_for_port(self.port)
            if self.process.poll() is None:
                self.started_at = time.monotonic()
                return
            time.sleep(0.1)  # the port is still in TIME_WAIT use or taken: try again
        raise RuntimeError(f"mosquitto would not start on {self.port}")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(5)
        self.process = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    retain: bool
    properties: Properties | None
    at: float

    def json(self) -> Any:
        return json.loads(self.payload)


class Probe:
    """A test-side MQTT client that records everything under its filters, in order."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.log: list[Received] = []
        self._changed = asyncio.Condition()

    async def _collect(self) -> None:
        async for message in self.client.messages:
            payload = message.payload if isinstance(message.payload, bytes) else b""
            async with self._changed:
                self.log.append(
                    Received(
                        message.topic.value,
                        payload,
                        message.retain,
                        message.properties,
                        time.monotonic(),
                    )
                )
                self._changed.notify_all()

    def mark(self) -> int:
        """A cursor: wait_for(since=mark) only sees messages that arrive after this point."""
        return len(self.log)

    async def wait_for(
        self,
        topic: str,
        predicate: Callable[[Received], bool] = lambda _: True,
        *,
        since: int = 0,
        within: float = 5.0,
    ) -> Received:
        def find() -> Received | None:
            for message in self.log[since:]:
                if message.topic == topic and predicate(message):
                    return message
            return None

        async with asyncio.timeout(within), self._changed:
            while (found := find()) is None:
                await self._changed.wait()
            return found

    async def wait_until(self, check: Callable[[], bool], *, within: float = 5.0) -> None:
        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(check)

    async def wait_json(
        self,
        topic: str,
        predicate: Callable[[Any], bool] = lambda _: True,
        *,
        since: int = 0,
        within: float = 5.0,
    ) -> Any:
        found = await self.wait_for(
            topic,
            lambda m: _json_or_none(m) is not None and predicate(m.json()),
            since=since,
            within=within,
        )
        return found.json()

    def messages(self, topic: str, *, since: int = 0) -> list[Received]:
        return [m for m in self.log[since:] if m.topic == topic]

    async def publish(
        self,
        topic: str,
        payload: bytes | str,
        *,
        retain: bool = False,
        qos: int = 1,
        properties: Properties | None = None,
    ) -> None:
        await self.client.publish(topic, payload, qos=qos, retain=retain, properties=properties)

    async def command(
        self,
        root: str,
        command: str,
        payload: bytes | str | dict[str, Any] = b"",
        *,
        within: float = 5.0,
    ) -> Any:
        """Publish to ``root/cmd/<command>`` and return the next response to it."""
        if isinstance(payload, dict):
            payload = json.dumps(payload)
        since = self.mark()
        await self.publish(f"{root}/cmd/{command}", payload)
        return await self.wait_json(f"{root}/response/{command}", since=since, within=within)


def _json_or_none(message: Received) -> Any:
    try:
        return message.json()
    except ValueError:
        return None


@contextlib.asynccontextmanager
async def probe(
    port: int,
    *filters: str,
    protocol: aiomqtt.ProtocolVersion = aiomqtt.ProtocolVersion.V5,
    **client_options: Any,
) -> AsyncIterator[Probe]:
    client = aiomqtt.Client(
        "127.0.0.1",
        port,
        identifier=f"probe-{uuid.uuid4().hex[:8]}",
        protocol=protocol,
        **client_options,
    )
    async with client:
        recorder = Probe(client)
        task = asyncio.create_task(recorder._collect())
        for topic_filter in filters:
            await client.subscribe(topic_filter, qos=1)
        try:
            yield recorder
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await task


def v5_request_properties(response_topic: str, correlation: bytes) -> Properties:
    properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    properties.ResponseTopic = response_topic
    properties.CorrelationData = correlation
    return properties


class CuttableLink:
    """A TCP relay in front of the broker: a test can sever the agent's connection (and keep
    it from reconnecting) while the broker itself stays up."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.open = True
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.open:
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers |= {writer, up_writer}

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        try:
            await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))
        finally:
            self._writers -= {writer, up_writer}

    def cut(self) -> None:
        """Drop every relayed connection and refuse new ones until restore()."""
        self.open = False
        for writer in list(self._writers):
            writer.transport.abort()

    def restore(self) -> None:
        self.open = True

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
