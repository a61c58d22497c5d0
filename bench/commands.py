"""Command latency: MQTT publish → response, over 1,000 commands, against a real mosquitto.

The agent runs as its own process (the real agent with the test session double, since a
response never waits for stream work). Two patterns: one command at a time (latency of a
lone command) and all fired at once (a burst; latency includes queueing behind the others),
each against mosquitto's default and with ``set_tcp_nodelay true``: a stock mosquitto lets
Nagle's algorithm hold small packets until the peer's delayed ACK (~40 ms per hop).

    .venv/bin/python bench/commands.py [--count 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiomqtt
import yaml

TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path.insert(0, str(TESTS))

from support.mqtt import Mosquitto  # noqa: E402


def _command(i: int) -> tuple[str, bytes]:
    """start, start, stop, status, ... with an id each: every kind of answer is measured."""
    kind = ("start", "start", "stop", "status")[i % 4]
    body: dict[str, object] = {"id": f"b{i}"}
    if kind == "start":
        body["url"] = f"http://bench.test/{i}"
    return kind, json.dumps(body).encode()


class Responses:
    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self.waiters: dict[str, asyncio.Future[None]] = {}

    async def collect(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            assert isinstance(message.payload, bytes)
            request_id = json.loads(message.payload)["id"]
            self.arrived[request_id] = time.perf_counter()
            waiter = self.waiters.pop(request_id, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)


async def _one_at_a_time(client: aiomqtt.Client, root: str, count: int) -> list[float]:
    responses = Responses()
    collector = asyncio.create_task(responses.collect(client))
    latencies = []
    for i in range(count):
        kind, payload = _command(i)
        waiter = asyncio.get_running_loop().create_future()
        responses.waiters[f"b{i}"] = waiter
        sent = time.perf_counter()
        await client.publish(f"{root}/cmd/{kind}", payload, qos=1)
        await asyncio.wait_for(waiter, 10)
        latencies.append(responses.arrived[f"b{i}"] - sent)
    collector.cancel()
    return latencies


async def _burst(client: aiomqtt.Client, root: str, count: int) -> tuple[list[float], float]:
    responses = Responses()
    collector = asyncio.create_task(responses.collect(client))
    done = asyncio.get_running_loop().create_future()
    responses.waiters[f"b{count - 1}"] = done
    sent: dict[str, float] = {}
    began = time.perf_counter()
    for i in range(count):
        kind, payload = _command(i)
        sent[f"b{i}"] = time.perf_counter()
        # paho queues it; we do not wait for the PUBACK, like a sender that fires and forgets.
        client._client.publish(f"{root}/cmd/{kind}", payload, qos=1)
    await asyncio.wait_for(done, 60)
    total = time.perf_counter() - began
    collector.cancel()
    missing = [key for key in sent if key not in responses.arrived]
    if missing:
        raise SystemExit(f"{len(missing)} responses missing, e.g. {missing[:3]}")
    return [responses.arrived[key] - sent[key] for key in sent], total


def _row(name: str, latencies: list[float]) -> str:
    ms = sorted(x * 1000 for x in latencies)
    p50 = statistics.median(ms)
    p99 = ms[min(len(ms) - 1, round(0.99 * len(ms)) - 1)]
    return f"| {name:<16} | {len(ms):>5} | {p50:>7.2f} | {p99:>7.2f} | {ms[-1]:>7.2f} |"


NODELAY = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]


async def measure(count: int, broker_nodelay: bool) -> tuple[list[float], list[float], float]:
    with tempfile.TemporaryDirectory(prefix="pagecast-bench-") as tmp:
        directory = Path(tmp)
        broker = Mosquitto(
            directory, listener_opts=f"set_tcp_nodelay {str(broker_nodelay).lower()}"
        )
        broker.start()
        node = f"bench-{uuid.uuid4().hex[:6]}"
        root = f"pagecast/{node}"
        config = directory / "agent.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "node_id": node,
                    "mqtt": {"host": "127.0.0.1", "port": broker.port},
                    "log": {"level": "WARNING"},
                    "homeassistant": {"enabled": False},
                }
            )
        )
        agent = await asyncio.create_subprocess_exec(
            sys.executable, str(TESTS / "support" / "agent_double.py"), "--config", str(config)
        )
        try:
            async with aiomqtt.Client(
                "127.0.0.1",
                broker.port,
                protocol=aiomqtt.ProtocolVersion.V5,
                socket_options=NODELAY,
            ) as client:
                await client.subscribe(f"{root}/availability", qos=1)
                async for message in client.messages:
                    if message.payload == b"online":
                        break
                await client.unsubscribe(f"{root}/availability")
                await client.subscribe(f"{root}/response/#", qos=1)
                serial = await _one_at_a_time(client, root, count)
                burst, total = await _burst(client, root, count)
        finally:
            agent.terminate()
            await asyncio.wait_for(agent.wait(), 10)
            broker.stop()
    return serial, burst, total


async def main(count: int) -> None:
    print(f"pagecast command latency, publish → response, {count} commands (ms)\n")
    print("| mosquitto             | pattern          |     n |     p50 |     p99 |     max |")
    print("|-----------------------|------------------|-------|---------|---------|---------|")
    throughput = []
    for nodelay in (False, True):
        serial, burst, total = await measure(count, nodelay)
        broker = "set_tcp_nodelay " + ("true" if nodelay else "false")
        print(f"| {broker:<21} " + _row("one at a time", serial))
        print(f"| {broker:<21} " + _row("burst (no wait)", burst))
        throughput.append(f"{broker}: {count / total:.0f} commands/s")
    print(f"\nburst throughput: {'; '.join(throughput)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    asyncio.run(main(parser.parse_args().count))
