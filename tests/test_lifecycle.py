"""The agent's life around the broker: reconnects, the will, signals, a clean goodbye."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from conftest import StartAgent
from support.agent_double import START_DELAY_ENV
from support.logwatch import LogWatch
from support.mqtt import CuttableLink, Mosquitto, free_port, probe

from agent.config import Settings

REPO = Path(__file__).resolve().parents[1]
DOUBLE_AGENT = Path(__file__).parent / "support" / "agent_double.py"
Spawn = Callable[..., tuple[subprocess.Popen[bytes], Settings]]


async def test_broker_restart_agent_back_within_3s(
    mosquitto: Mosquitto, agent_settings: Callable[..., Settings], start_agent: StartAgent
) -> None:
    settings = agent_settings(mqtt={"heartbeat_interval": 0.5})
    root = settings.topic_root
    async with start_agent(settings) as agent:
        async with probe(mosquitto.port, f"{root}/response/#") as client:
            started = await client.command(root, "start", "http://a/before")
        with LogWatch("MQTT connect failed") as refused:
            mosquitto.kill()
            await refused.seen(2)  # the agent retries against a dead port meanwhile
        mosquitto.start()
        async with probe(mosquitto.port, f"{root}/#") as client:
            online = await client.wait_for(
                f"{root}/availability", lambda m: m.payload == b"online", within=3
            )
            assert online.at - mosquitto.started_at < 3.0
            # Republished from the agent's own state: the broker had forgotten everything.
            status = client.messages(f"{root}/status")[-1].json()
            assert status["state"] == "streaming"
            assert status["session_id"] == started["session_id"]
            assert client.messages(f"{root}/info")
            beat = await client.wait_json(f"{root}/heartbeat", lambda b: b["mqtt_reconnects"] == 1)
            assert beat["state"] == "streaming"
            response = await client.command(root, "stop", "")
            assert response["changed"]
        assert len(agent.factory.sessions) == 1


async def test_command_sent_while_disconnected_is_not_run_later(
    mosquitto: Mosquitto, agent_settings: Callable[..., Settings], start_agent: StartAgent
) -> None:
    link = CuttableLink(mosquitto.port)
    await link.start()
    settings = agent_settings(mqtt={"port": link.port})
    root = settings.topic_root
    try:
        async with (
            probe(mosquitto.port, f"{root}/#") as client,
            start_agent(settings) as agent,
        ):
            # start_agent saw "online" through its own client; this one may not have yet, and
            # would then take that first "online" for the one after the cut.
            await client.wait_for(f"{root}/availability", lambda m: m.payload == b"online")
            since = client.mark()
            link.cut()
            # An unclean loss: the broker publishes the will for us.
            await client.wait_for(f"{root}/availability", lambda m: m.payload == b"offline")
            await client.publish(f"{root}/cmd/start", b'{"url": "http://a/queued", "id": "q"}')
            link.restore()
            await client.wait_for(
                f"{root}/availability", lambda m: m.payload == b"online", since=since, within=5
            )
            response = await client.command(root, "status", {"id": "after"})
            assert response["status"]["state"] == "idle"
            assert client.messages(f"{root}/response/start", since=since) == []
            assert agent.factory.sessions == []
    finally:
        await link.close()


@pytest.fixture
def spawn_agent(
    tmp_path: Path, state_dir: Path, agent_settings: Callable[..., Settings]
) -> Iterator[Spawn]:
    """``python tests/support/agent_double.py``: the real agent as a process, the double inside."""
    processes: list[subprocess.Popen[bytes]] = []

    def spawn(settings: Settings | None = None) -> tuple[subprocess.Popen[bytes], Settings]:
        settings = settings or agent_settings()
        config = tmp_path / f"{uuid.uuid4().hex}.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "node_id": settings.node_id,
                    "mqtt": {"host": "127.0.0.1", "port": settings.mqtt.port},
                    "cast": {"device": "none"},
                    "homeassistant": {"enabled": False},
                }
            )
        )
        log = (tmp_path / "agent.log").open("ab")
        process = subprocess.Popen(
            [sys.executable, str(DOUBLE_AGENT), "--config", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={
                "PATH": "/usr/bin:/bin",
                START_DELAY_ENV: "0.05",
                "PAGECAST_STATE_DIR": str(state_dir),
            },
        )
        log.close()
        processes.append(process)
        return process, settings

    yield spawn
    for process in processes:
        if process.poll() is None:
            process.kill()  # SIGKILL also ends a SIGSTOPped one
        process.wait(5)


async def test_kill_9_makes_the_broker_publish_offline(
    mosquitto: Mosquitto, spawn_agent: Spawn
) -> None:
    process, settings = spawn_agent()
    root = settings.topic_root
    async with probe(mosquitto.port, f"{root}/#") as client:
        await client.wait_for(f"{root}/availability", lambda m: m.payload == b"online", within=15)
        since = client.mark()
        process.send_signal(signal.SIGKILL)
        process.wait(5)
        offline = await client.wait_for(f"{root}/availability", since=since)
        assert offline.payload == b"offline"


async def test_sigterm_stops_the_stream_and_says_offline(
    mosquitto: Mosquitto,
    spawn_agent: Spawn,
    tmp_path: Path,
) -> None:
    process, settings = spawn_agent()
    root = settings.topic_root
    async with probe(mosquitto.port, f"{root}/#") as client:
        await client.wait_for(f"{root}/availability", lambda m: m.payload == b"online", within=15)
        await client.command(root, "start", "http://a/term")
        await client.wait_json(f"{root}/status", lambda s: s["state"] == "streaming")
        since = client.mark()
        sent = time.monotonic()
        process.send_signal(signal.SIGTERM)
        offline = await client.wait_for(
            f"{root}/availability", lambda m: m.payload == b"offline", since=since, within=5
        )
        assert process.wait(5) == 0
        assert time.monotonic() - sent < 5
        statuses = [m.json() for m in client.messages(f"{root}/status", since=since)]
        assert statuses[-1]["state"] == "idle"
        last_status = client.messages(f"{root}/status", since=since)[-1]
        assert last_status.at <= offline.at
        stopped = await client.wait_json(f"{root}/event", lambda e: e["event"] == "stopped")
        assert stopped["reason"] == "shutdown"
    # The agent said goodbye itself (a clean disconnect, so the will never fired).
    assert "published offline" in (tmp_path / "agent.log").read_text()


async def test_shutdown_while_the_broker_is_down(
    mosquitto: Mosquitto, agent_settings: Callable[..., Settings], start_agent: StartAgent
) -> None:
    async with start_agent(agent_settings()) as agent:
        async with probe(mosquitto.port, f"{agent.root}/response/#") as client:
            await client.command(agent.root, "start", "http://a/down")
        with LogWatch("MQTT connection lost") as lost:
            mosquitto.kill()
            await lost.seen()
        began = time.monotonic()
        await agent.stop()
        assert time.monotonic() - began < 5
        assert not agent.factory.alive


async def test_a_restarted_agent_ends_online_while_its_old_self_hangs(
    mosquitto: Mosquitto, spawn_agent: Spawn
) -> None:
    """Same node id, old process frozen: the broker hands the session over, publishes the old
    connection's will, and the new agent's ``online`` comes after it, so it stays online."""
    old, settings = spawn_agent()
    root = settings.topic_root
    async with probe(mosquitto.port, f"{root}/availability") as client:
        await client.wait_for(f"{root}/availability", lambda m: m.payload == b"online", within=15)
        old.send_signal(signal.SIGSTOP)
        since = client.mark()
        spawn_agent(settings)
        await client.wait_for(
            f"{root}/availability", lambda m: m.payload == b"online", since=since, within=15
        )
        payloads = [m.payload for m in client.messages(f"{root}/availability", since=since)]
        assert payloads == [b"offline", b"online"]
    async with probe(mosquitto.port, f"{root}/availability") as late:
        assert (await late.wait_for(f"{root}/availability")).payload == b"online"


def _descendants(pid: int) -> set[int]:
    children = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                child = int(stat.parent.name)
                children |= {child, *_descendants(child)}
    return children


def _alive(pid: int) -> bool:
    with contextlib.suppress(OSError):
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    return False


async def test_the_shipped_agent_streams_and_ends_cleanly_on_sigterm(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """``python -m agent`` with the real pipeline and no TV in sight: it still streams and says
    where to look; SIGTERM leaves nothing over."""
    node = f"real-{uuid.uuid4().hex[:6]}"
    root = f"pagecast/{node}"
    http_port = free_port()
    config = tmp_path / "agent.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "node_id": node,
                "mqtt": {"host": "127.0.0.1", "port": mosquitto.port},
                # No device configured and none found: a newcomer's first run.
                "cast": {"mdns": False, "discovery_timeout": 0.5},
                "stream": {
                    "http_host": "127.0.0.1",
                    "http_port": http_port,
                    "public_host": "127.0.0.1",
                },
                "browser": {"keep_warm": False},
                "homeassistant": {"enabled": False},
            }
        )
    )
    with (tmp_path / "agent.log").open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "agent", "--config", str(config),
            stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
        )  # fmt: skip
    try:
        async with probe(mosquitto.port, f"{root}/#") as client:
            await client.wait_for(
                f"{root}/availability", lambda m: m.payload == b"online", within=30
            )
            # The agent's own health page is a page like any other.
            started = await client.command(root, "start", f"http://127.0.0.1:{http_port}/healthz")
            assert started["ok"]
            status = await client.wait_json(
                f"{root}/status", lambda s: s["state"] in ("streaming", "error"), within=60
            )
            assert status["state"] == "streaming", status
            assert status["stream_url"].startswith(f"http://127.0.0.1:{http_port}/stream/")
            base = f"http://127.0.0.1:{http_port}"
            printed = await _wait_for_text(tmp_path / "agent.log", status["stream_url"])
            assert f"health {base}/healthz, snapshot {base}/snapshot.jpg" in printed
            children = _descendants(process.pid)
            assert children, "the pipeline runs in child processes"
            since = client.mark()
            sent = time.monotonic()
            process.send_signal(signal.SIGTERM)
            await client.wait_for(
                f"{root}/availability", lambda m: m.payload == b"offline", since=since, within=5
            )
            assert await asyncio.wait_for(process.wait(), 10) == 0
            assert time.monotonic() - sent < 5
            last = client.messages(f"{root}/status", since=since)[-1].json()
            assert last["state"] == "idle"
            assert not [pid for pid in children if _alive(pid)], "orphans after SIGTERM"
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def _wait_for_text(path: Path, text: str, within: float = 10) -> str:
    """The log so far, once it contains ``text``."""
    deadline = time.monotonic() + within
    while True:
        content = await asyncio.to_thread(path.read_text, errors="replace")
        if text in content or time.monotonic() > deadline:
            assert text in content, f"{text!r} never printed:\n{content[-2000:]}"
            return content
        await asyncio.sleep(0.1)
