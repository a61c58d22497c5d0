"""``/healthz`` can fail (issue 8.6), the heartbeat shows the process tree, and start-up faults
reach MQTT instead of ending the agent (issue 11.3)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import playwright
import pytest
from support.agent import real_agent
from support.mqtt import Mosquitto, free_port

from agent.config import Settings, StreamSettings
from agent.errors import ErrorCode, ErrorInfo
from agent.health import Health, mqtt_probe, segment_probe, startup_probe, task_probe
from agent.startup import describe_fault
from agent.supervisor.state import State, Status, StreamFigures

# -- probes ----------------------------------------------------------------------------------------


@dataclass
class _Link:
    connected: bool = True
    down_since: float | None = None


@dataclass
class _Supervisor:
    status: Status = field(default_factory=Status)
    segment_age_s: float | None = None

    def figures(self) -> StreamFigures | None:
        return StreamFigures(segment_age_s=self.segment_age_s)


def test_mqtt_fails_only_after_the_grace() -> None:
    link = _Link()
    probe = mqtt_probe(link, grace_s=30)
    assert probe().ok
    link.connected, link.down_since = False, time.monotonic() - 10
    assert probe().ok  # a broker restart is no reason to restart the agent
    link.down_since = time.monotonic() - 31
    check = probe()
    assert not check.ok
    assert "no broker for 31 s" in check.detail


def test_a_stale_segment_fails_only_while_streaming() -> None:
    supervisor = _Supervisor(segment_age_s=4.5)
    probe = segment_probe(supervisor, limit=4.0)
    assert probe().ok  # idle: no segments expected
    supervisor.status = Status(state=State.STREAMING)
    assert not probe().ok
    supervisor.segment_age_s = 3.5
    assert probe().ok
    supervisor.status = Status(state=State.WAITING)
    supervisor.segment_age_s = 60.0
    assert probe().ok  # parked for a TV that is off: no segments is right


def test_health_and_pipeline_share_one_stall_limit() -> None:
    """With 0.5 s segments four segments are 2 s: /healthz failed at 2 s while the pipeline
    waited 4 s before it called ffmpeg stalled; both read ``stall_after_s`` now."""
    assert StreamSettings(latency="low").stall_after_s == 4.0
    assert StreamSettings(latency="normal").stall_after_s == 4.0
    assert StreamSettings(segment_seconds=2.0).stall_after_s == 8.0
    supervisor = _Supervisor(segment_age_s=3.0)  # six segments of 0.5 s: a hiccup, no stall
    supervisor.status = Status(state=State.STREAMING)
    assert segment_probe(supervisor, StreamSettings().stall_after_s)().ok


def test_the_body_names_every_failing_part() -> None:
    fault = ErrorInfo(ErrorCode.PIPELINE_FAILED, "the browser cannot start: boom")
    health = Health(
        [
            mqtt_probe(_Link(connected=False, down_since=time.monotonic() - 99), grace_s=1),
            task_probe("supervisor", lambda: False),
            startup_probe(lambda: fault),
        ]
    )
    healthy, body = health.report()
    assert not healthy
    assert body["ok"] is False
    assert body["failing"] == ["mqtt", "supervisor", "backend"]
    assert body["checks"]["backend"]["detail"] == fault.message


def test_a_fault_is_one_short_line() -> None:
    error = RuntimeError(
        "BrowserType.launch: Target page, context or browser has been closed\n"
        "Browser logs:\n\n╔════════╗\n║ Looks like you launched a headed browser ║\n" + "x" * 500
    )
    fault = describe_fault("the browser", error)
    assert fault.code is ErrorCode.PIPELINE_FAILED
    assert "\n" not in fault.message
    assert fault.message == (
        "the browser cannot start: BrowserType.launch: Target page, context or browser has "
        "been closed"
    )


# -- the agent -------------------------------------------------------------------------------------


@pytest.fixture
def backend_settings(agent_settings: Callable[..., Settings]) -> Callable[..., Settings]:
    """The real backend (HTTP server, Playwright) without a browser: cheap on a loaded machine."""

    def make(**overrides: Any) -> Settings:
        return agent_settings(
            stream={"http_host": "127.0.0.1", "http_port": free_port()},
            browser={"keep_warm": False},
            **overrides,
        )

    return make


async def _healthz(http: aiohttp.ClientSession, port: int) -> tuple[int, Any]:
    async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
        return response.status, await response.json()


async def _wait_health(
    http: aiohttp.ClientSession, port: int, status: int, within: float
) -> tuple[float, Any]:
    """Seconds until /healthz answered ``status``, and that answer's body."""
    began = time.monotonic()
    for _ in range(int(within / 0.1)):
        with_status, body = await _healthz(http, port)
        if with_status == status:
            return time.monotonic() - began, body
        await asyncio.sleep(0.1)
    raise AssertionError(f"/healthz not {status} within {within} s: {with_status} {body}")


async def test_healthz_fails_without_a_broker_and_recovers_with_it(
    mosquitto: Mosquitto, backend_settings: Callable[..., Settings]
) -> None:
    settings = backend_settings(mqtt={"health_grace_s": 2.0, "reconnect_max_s": 0.5})
    port = settings.stream.http_port
    async with real_agent(settings), aiohttp.ClientSession() as http:
        await _wait_health(http, port, 200, within=10)
        mosquitto.kill()
        lost = time.monotonic()
        _, body = await _wait_health(http, port, 503, within=10)
        assert time.monotonic() - lost >= 2.0, "failed before the grace was over"
        assert body["failing"] == ["mqtt"]
        assert body["checks"]["supervisor"]["ok"]
        mosquitto.start()
        await _wait_health(http, port, 200, within=10)


async def test_the_heartbeat_carries_the_process_tree(
    mosquitto: Mosquitto, backend_settings: Callable[..., Settings]
) -> None:
    settings = backend_settings(mqtt={"heartbeat_interval": 0.5})
    root = settings.topic_root
    async with real_agent(settings) as client:
        beat = await client.wait_json(f"{root}/heartbeat", lambda b: b["seq"] >= 2)
        # This test process plus Playwright's driver at least; tens of MB.
        assert beat["processes"] >= 2
        assert beat["tree_rss_mb"] > 20


async def test_a_backend_that_cannot_start_is_shown_on_mqtt_and_retried(
    mosquitto: Mosquitto, backend_settings: Callable[..., Settings]
) -> None:
    """The HTTP port is taken: the agent still comes online, says why in one line, and starts
    the backend by itself once the port is free."""
    settings = backend_settings()
    root = settings.topic_root
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", settings.stream.http_port))
    blocker.listen()
    try:
        async with real_agent(settings) as client:
            status = await client.wait_json(f"{root}/status", lambda s: s["state"] == "error")
            assert status["error"]["code"] == "PIPELINE_FAILED"
            message = status["error"]["message"]
            assert message.startswith("the stream backend cannot start:"), message
            assert "address already in use" in message
            assert "\n" not in message
            assert client.messages(f"{root}/availability")[-1].payload == b"online"
            # A start meanwhile fails at once with that reason, rather than hang.
            await client.command(root, "start", "http://127.0.0.1:9/x")
            failed = await client.wait_json(f"{root}/event", lambda e: e["event"] == "failed")
            assert failed["error"]["message"] == message
            blocker.close()
            since = client.mark()
            await client.wait_json(
                f"{root}/status", lambda s: s["state"] == "idle", since=since, within=15
            )
    finally:
        blocker.close()


async def test_a_playwright_driver_that_dies_at_start_is_said_and_retried(
    mosquitto: Mosquitto,
    backend_settings: Callable[..., Settings],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 11's crash loop: Node.js cannot load libatomic. The agent stays online, says so,
    and comes up by itself once the library is there (here: from the third attempt on)."""
    counter = tmp_path / "attempts"
    counter.write_text("0")
    node = Path(playwright.__file__).parent / "driver" / "node"
    fake = tmp_path / "node"
    fake.write_text(
        "#!/bin/sh\n"
        f'n=$(cat "{counter}"); echo $((n + 1)) > "{counter}"\n'
        '[ "$n" -lt 2 ] && { echo "node: error while loading shared libraries: '
        'libatomic.so.1: cannot open shared object file" >&2; exit 127; }\n'
        f'exec "{node}" "$@"\n'
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PLAYWRIGHT_NODEJS_PATH", str(fake))
    settings = backend_settings()
    root = settings.topic_root
    async with real_agent(settings) as client:
        status = await client.wait_json(f"{root}/status", lambda s: s["state"] == "error")
        message = status["error"]["message"]
        assert message.startswith("the stream backend cannot start: Playwright's driver"), message
        assert "libatomic1" in message
        since = client.mark()
        await client.wait_json(
            f"{root}/status", lambda s: s["state"] == "idle", since=since, within=20
        )
        assert int(counter.read_text()) == 3
