"""The image and the Home Assistant add-on, built and run on a real Docker engine.

What a user meets: `docker build`, `docker run --network host` against a broker, a page
streamed through MQTT, health, a clean `docker stop`. The static checks of the same files are
in test_docker.py; these need an engine (``scripts/test.sh --docker``) and are skipped without.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from support.containers import ROOT, Container, container, docker, sandboxed_renderers
from support.loopback import serving
from support.media import fetch, media_playlist, media_playlist_url, probe_streams
from support.mqtt import Mosquitto, Probe, free_port, probe
from support.pages import PageServer

from agent.stream.browser import SANDBOX_HELP

pytestmark = [pytest.mark.docker, pytest.mark.timeout(1800)]

SECCOMP_PROFILE = ROOT / "docker" / "seccomp-chromium.json"
# Chromium plus the first segments; generous because the machine runs other suites meanwhile.
STREAMING_WITHIN = 60.0


def agent_env(mosquitto: Mosquitto, node_id: str, http_port: int) -> dict[str, str]:
    return {
        "PAGECAST_NODE_ID": node_id,
        "PAGECAST_MQTT__HOST": "127.0.0.1",
        "PAGECAST_MQTT__PORT": str(mosquitto.port),
        "PAGECAST_CAST__DEVICE": "none",
        "PAGECAST_STREAM__HTTP_HOST": "127.0.0.1",
        "PAGECAST_STREAM__HTTP_PORT": str(http_port),
        "PAGECAST_STREAM__PUBLIC_HOST": "127.0.0.1",
        "PAGECAST_HOMEASSISTANT__ENABLED": "false",
        "PAGECAST_SNAPSHOT__INTERVAL": "1",
        "PAGECAST_SNAPSHOT__MQTT": "true",
    }


async def online(watch: Probe, root: str, running: Container) -> None:
    try:
        await watch.wait_for(f"{root}/availability", lambda m: m.payload == b"online", within=60)
    except TimeoutError:
        raise AssertionError(f"never online: {await running.state()}") from None


async def start_streaming(watch: Probe, root: str, url: str) -> dict[str, Any]:
    since = watch.mark()
    response = await watch.command(root, "start", {"url": url, "quality": "480p"}, within=90)
    assert response["ok"], response
    status: dict[str, Any] = await watch.wait_json(
        f"{root}/status", lambda s: s["state"] == "streaming", since=since, within=STREAMING_WITHIN
    )
    return status


def assert_sandboxed(processes: list[str]) -> None:
    """Chromium runs as the agent's user, without --no-sandbox, its renderers namespaced."""
    chromium = [line for line in processes if "chromium" in line and "--type=" in line]
    assert chromium, processes
    assert all(line.startswith("pagecast") for line in chromium), processes
    assert not any("--no-sandbox" in line for line in processes), processes
    nspids = [line.split()[1:] for line in processes if line.startswith("NSpid")]
    assert nspids, processes
    assert all(len(ids) > 1 for ids in nspids), processes


async def first_segment_streams(stream_url: str) -> set[str]:
    """The codecs of the newest segment, probed the way a receiver would fetch it."""
    # status "streaming" is published once the playlist has its first segments.
    playlist_url = await asyncio.to_thread(media_playlist_url, stream_url)
    playlist = await asyncio.to_thread(media_playlist, playlist_url)
    assert playlist.segments, playlist
    streams = await asyncio.to_thread(probe_streams, playlist.segments[-1])
    return {str(s["codec_name"]) for s in streams}


async def test_image_streams_a_page_and_stops_cleanly(
    docker_image: str, mosquitto: Mosquitto, page_server: PageServer
) -> None:
    node_id, http_port = f"c-{uuid.uuid4().hex[:8]}", free_port()
    root = f"pagecast/{node_id}"
    env = agent_env(mosquitto, node_id, http_port)
    # As docker-compose.yml runs it: an init, SYS_ADMIN for the sandbox, no new privileges.
    options = ["--init", "--cap-add", "SYS_ADMIN", "--security-opt", "no-new-privileges:true"]
    async with (
        probe(mosquitto.port, f"{root}/#") as watch,
        container(docker_image, *options, env=env) as running,
    ):
        await online(watch, root, running)
        status = await start_streaming(watch, root, page_server.color("#3060c0"))
        assert await first_segment_streams(status["stream_url"]) == {"h264", "aac"}
        # Snapshots are also published on ~/snapshot: once one is there, the endpoint has it.
        await watch.wait_for(f"{root}/snapshot", within=60)
        snapshot = await asyncio.to_thread(fetch, f"http://127.0.0.1:{http_port}/snapshot.jpg")
        assert snapshot.status == 200
        assert snapshot.body[:2] == b"\xff\xd8"
        await running.wait_healthy(within=30)

        assert await running.exec("id", "-u") == "1000"
        assert_sandboxed(await sandboxed_renderers(running))

        since = watch.mark()
        began = time.monotonic()
        await docker("stop", "-t", "10", running.id)
        stop_s = time.monotonic() - began
        await watch.wait_for(
            f"{root}/availability", lambda m: m.payload == b"offline", since=since, within=10
        )
        state = await running.state()
        assert state["ExitCode"] == 0, state
        assert stop_s < 10, stop_s


async def test_seccomp_profile_keeps_the_sandbox_without_sys_admin(
    docker_image: str, mosquitto: Mosquitto, page_server: PageServer
) -> None:
    node_id = f"c-{uuid.uuid4().hex[:8]}"
    root = f"pagecast/{node_id}"
    env = agent_env(mosquitto, node_id, free_port())
    options = ["--init", "--security-opt", f"seccomp={SECCOMP_PROFILE}"]
    options += ["--security-opt", "no-new-privileges:true"]
    async with (
        probe(mosquitto.port, f"{root}/#") as watch,
        container(docker_image, *options, env=env) as running,
    ):
        await online(watch, root, running)
        await start_streaming(watch, root, page_server.color("#30c060"))
        assert_sandboxed(await sandboxed_renderers(running))


async def test_without_sys_admin_the_error_says_what_to_add(
    docker_image: str, mosquitto: Mosquitto, page_server: PageServer
) -> None:
    node_id = f"c-{uuid.uuid4().hex[:8]}"
    root = f"pagecast/{node_id}"
    env = agent_env(mosquitto, node_id, free_port())
    async with (
        probe(mosquitto.port, f"{root}/#") as watch,
        container(docker_image, "--init", env=env) as running,
    ):
        await online(watch, root, running)
        since = watch.mark()
        await watch.publish(f"{root}/cmd/start", page_server.color("#c03030"))
        status = await watch.wait_json(
            f"{root}/status", lambda s: s["state"] == "error", since=since, within=90
        )
        assert status["error"] == {"code": "PIPELINE_FAILED", "message": SANDBOX_HELP}
        assert "\n" not in SANDBOX_HELP
        assert "SYS_ADMIN" in SANDBOX_HELP
        assert "seccomp" in SANDBOX_HELP
        # Not a crash loop: the agent stays up and answers the next command.
        assert (await running.state())["Running"] is True
        status = await watch.command(root, "status")
        assert status["ok"], status


@pytest.fixture
async def supervisor(mosquitto: Mosquitto) -> Any:
    """A stand-in for the Supervisor's services API: GET /services/mqtt with the add-on token."""
    token = uuid.uuid4().hex
    asked: list[str] = []

    async def mqtt_service(request: web.Request) -> web.Response:
        asked.append(request.headers.get("Authorization", ""))
        if request.headers.get("Authorization") != f"Bearer {token}":
            return web.json_response({"result": "error", "message": "unauthorized"}, status=401)
        data = {"host": "127.0.0.1", "port": mosquitto.port, "ssl": False, "protocol": "3.1.1"}
        return web.json_response({"result": "ok", "data": data})

    app = web.Application()
    app.router.add_get("/services/mqtt", mqtt_service)
    async with serving(app) as port:
        yield f"http://127.0.0.1:{port}", token, asked


async def test_addon_streams_from_its_options(
    addon_image: str,
    mosquitto: Mosquitto,
    page_server: PageServer,
    supervisor: tuple[str, str, list[str]],
    tmp_path: Path,
) -> None:
    url, token, asked = supervisor
    node_id, http_port = f"a-{uuid.uuid4().hex[:8]}", free_port()
    root = f"pagecast/{node_id}"
    data = tmp_path / "data"
    data.mkdir()
    options = {
        "node_id": node_id,
        "cast_device": "none",
        "known_hosts": [],
        "http_port": http_port,
        "public_host": "127.0.0.1",
        "log_level": "debug",
        "env": ["PAGECAST_STREAM__HTTP_HOST=127.0.0.1", "PAGECAST_HOMEASSISTANT__ENABLED=false"],
    }
    (data / "options.json").write_text(json.dumps(options), encoding="utf-8")
    env = {"SUPERVISOR_URL": url, "SUPERVISOR_TOKEN": token}
    # As the Supervisor runs it: host network, SYS_ADMIN, /data mounted, an init.
    run_options = ["--init", "--cap-add", "SYS_ADMIN", "-v", f"{data}:/data"]
    async with (
        probe(mosquitto.port, f"{root}/#") as watch,
        container(addon_image, *run_options, env=env) as running,
    ):
        await online(watch, root, running)
        assert asked == [f"Bearer {token}"]
        status = await start_streaming(watch, root, page_server.color("#c0c030"))
        assert await first_segment_streams(status["stream_url"]) == {"h264", "aac"}
        # run.py became the agent (exec) as the unprivileged user, and kept the token to itself.
        pid = await running.exec("pgrep", "-o", "-f", "pagecast run")
        assert await running.exec("ps", "-o", "user=", "-p", pid) == "pagecast"
        environ = (await running.exec("cat", f"/proc/{pid}/environ", user="root")).split("\0")
        assert "PAGECAST_STATE_DIR=/data/state" in environ
        assert not [v for v in environ if v.startswith("SUPERVISOR_TOKEN")]
        assert (data / "state").stat().st_uid == 1000
