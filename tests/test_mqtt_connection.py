"""How the agent connects: TLS with user/password, refusal handling, and the extension hook."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from conftest import StartAgent
from support.agent_double import DoubleFactory
from support.logwatch import LogWatch
from support.mqtt import Mosquitto, probe

from agent.app import run_agent
from agent.commands import Dispatcher
from agent.config import Settings
from agent.supervisor.supervisor import Supervisor
from agent.transport.base import Publisher
from agent.transport.mqtt import MqttTransport


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[tuple[Mosquitto, Path]]:
    """mosquitto with TLS only (a self-signed cert for 127.0.0.1) and a password file."""
    directory = tmp_path / "tls-broker"
    directory.mkdir()
    cert, key, passwords = directory / "cert.pem", directory / "key.pem", directory / "passwd"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    subprocess.run(
        ["mosquitto_passwd", "-b", "-c", str(passwords), "agent", "s3cret"],
        check=True,
        capture_output=True,
    )
    broker = Mosquitto(
        directory,
        anonymous=False,
        listener_opts=f"certfile {cert}\nkeyfile {key}\npassword_file {passwords}",
    )
    broker.start()
    try:
        yield broker, cert
    finally:
        broker.stop()


def _tls_settings(broker: Mosquitto, cert: Path, password: str) -> Settings:
    return Settings(
        node_id=f"tls-{uuid.uuid4().hex[:6]}",
        mqtt={
            "host": "127.0.0.1",
            "port": broker.port,
            "username": "agent",
            "password": password,
            "tls": {"enabled": True, "ca_certs": str(cert)},
            "reconnect_min_s": 0.1,
            "reconnect_max_s": 0.4,
        },
        homeassistant={"enabled": False},
    )


async def test_tls_and_password(
    tls_broker: tuple[Mosquitto, Path], start_agent: StartAgent
) -> None:
    broker, cert = tls_broker
    settings = _tls_settings(broker, cert, "s3cret")
    root = settings.topic_root
    tls = ssl.create_default_context(cafile=str(cert))
    options: dict[str, Any] = {"username": "agent", "password": "s3cret", "tls_context": tls}
    async with (
        start_agent(settings, **options),
        probe(broker.port, f"{root}/#", **options) as client,
    ):
        started = await client.command(root, "start", "https://example.test/secure")
        assert started["ok"]
        await client.wait_json(f"{root}/status", lambda s: s["state"] == "streaming")


async def test_refused_login_keeps_retrying_without_crashing(
    tls_broker: tuple[Mosquitto, Path],
) -> None:
    broker, cert = tls_broker
    settings = _tls_settings(broker, cert, "wrong")
    stop = asyncio.Event()
    with LogWatch("MQTT connect failed") as refused:
        agent = asyncio.create_task(run_agent(settings, session_factory=DoubleFactory(), stop=stop))
        await refused.seen(3)  # refused again and again, at 0.1-0.4 s
    assert not agent.done()
    log = (broker.directory / "mosquitto.log").read_text()
    assert log.count("not authorised") >= 2  # it kept trying
    stop.set()
    await asyncio.wait_for(agent, 5)


class RecordingExtension:
    """An extension as Home Assistant discovery or snapshots use the hook."""

    name = "recording"

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.connects = 0
        self.received: list[bytes] = []
        self.ticks = asyncio.Event()

    def subscriptions(self) -> Sequence[str]:
        return [f"{self.topic}/in/#"]

    async def on_connect(self, publisher: Publisher) -> None:
        self.connects += 1
        assert publisher.connected
        await publisher.publish(f"{self.topic}/hello", {"connects": self.connects}, retain=True)

    async def on_message(self, topic: str, payload: bytes, publisher: Publisher) -> None:
        self.received.append(payload)
        await publisher.publish(f"{self.topic}/echo", payload)
        if payload == b"republish":
            await publisher.republish()

    async def run(self, publisher: Publisher) -> None:
        await self.ticks.wait()
        await publisher.publish(publisher.topics["tick"], b"tock", qos=0)


async def test_extension_hook(
    mosquitto: Mosquitto, agent_settings: Callable[..., Settings]
) -> None:
    settings = agent_settings()
    root = settings.topic_root
    extension = RecordingExtension(f"ext/{uuid.uuid4().hex[:6]}")
    async with probe(mosquitto.port, f"{root}/#", f"{extension.topic}/#") as client:
        # Wired as run_agent wires its extensions.
        supervisor = Supervisor(DoubleFactory())
        transport = MqttTransport(
            settings, supervisor, Dispatcher(supervisor, settings), extensions=[extension]
        )
        async with asyncio.TaskGroup() as tg:
            supervising = tg.create_task(supervisor.run())
            serving = tg.create_task(transport.run())
            hello = await client.wait_for(f"{extension.topic}/hello")
            online = await client.wait_for(f"{root}/availability")
            assert hello.at <= online.at  # extensions announce before "online"
            info = (await client.wait_for(f"{root}/info")).json()
            assert "recording" in info["capabilities"]

            since = client.mark()
            await client.publish(f"{extension.topic}/in/x", b"ping")
            assert (
                await client.wait_for(f"{extension.topic}/echo", since=since)
            ).payload == b"ping"
            await client.publish(f"{extension.topic}/in/x", b"republish")
            await client.wait_for(f"{root}/status", since=since)
            await client.wait_for(f"{root}/availability", since=since)
            extension.ticks.set()
            assert (await client.wait_for(f"{root}/tick")).payload == b"tock"
            assert extension.received == [b"ping", b"republish"]

            await supervisor.shutdown()
            await transport.close()
            assert serving.done()
            supervising.cancel()


class BrokenExtension:
    name = "broken"

    def subscriptions(self) -> Sequence[str]:
        return ["broken/in"]

    async def on_connect(self, publisher: Publisher) -> None:
        raise RuntimeError("on_connect bug")

    async def on_message(self, topic: str, payload: bytes, publisher: Publisher) -> None:
        raise RuntimeError("on_message bug")

    async def run(self, publisher: Publisher) -> None:
        raise RuntimeError("run bug")


async def test_a_broken_extension_does_not_take_the_agent_down(
    mosquitto: Mosquitto, agent_settings: Callable[..., Settings]
) -> None:
    settings = agent_settings()
    root = settings.topic_root
    supervisor = Supervisor(DoubleFactory())
    transport = MqttTransport(
        settings, supervisor, Dispatcher(supervisor, settings), extensions=[BrokenExtension()]
    )
    async with probe(mosquitto.port, f"{root}/#") as client, asyncio.TaskGroup() as tg:
        supervising = tg.create_task(supervisor.run())
        tg.create_task(transport.run())
        await client.wait_for(f"{root}/availability", lambda m: m.payload == b"online")
        await client.publish("broken/in", b"x")
        started = await client.command(root, "start", "http://a/still-serving")
        assert started["ok"]
        await client.wait_json(f"{root}/status", lambda s: s["state"] == "streaming")
        await supervisor.shutdown()
        await transport.close()
        supervising.cancel()
