"""The Node-RED example flow, run by real Node-RED against the test broker and the agent
(as ``pagecast run`` runs it: real pipeline, no TV).

The flow is loaded as a user imports it; only its broker node is pointed at the test broker
(what a user does after importing). The test presses the flow's inject buttons through the
editor's HTTP API and watches the debug sidebar and node statuses through the editor's
websocket, exactly what a user sees in the editor.

Node-RED comes from npm into ``tests/.cache/node-red`` (once; later runs reuse it offline).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from support.agent import real_agent
from support.mqtt import Mosquitto, free_port
from support.pages import PageServer, page_server  # noqa: F401 (fixture)

from agent.config import Settings

pytestmark = pytest.mark.nodered

ROOT = Path(__file__).resolve().parents[1]
FLOW = ROOT / "examples" / "node-red" / "flow.json"
# 4.x supports Node.js 18 and 20; Node-RED 5 needs Node.js 22.
NODE_RED_VERSION = "4.1.8"
CACHE = Path(os.environ.get("PAGECAST_NODE_RED_CACHE", ROOT / "tests" / ".cache" / "node-red"))
RED_JS = CACHE / "node_modules" / "node-red" / "red.js"
NODE_ID = "living-room"  # the node id the example flow's topics use
WAIT_S = 15.0


def installed_version() -> str | None:
    package = CACHE / "node_modules" / "node-red" / "package.json"
    if not package.exists():
        return None
    return str(json.loads(package.read_text(encoding="utf-8"))["version"])


@pytest.fixture(scope="session")
def node_red() -> Path:
    """red.js of the pinned Node-RED, installed on first use."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("Node.js/npm not installed (scripts/setup.sh --dev installs them)")
    if installed_version() != NODE_RED_VERSION:
        CACHE.mkdir(parents=True, exist_ok=True)
        # --prefer-offline: a warm npm cache installs without the network.
        result = subprocess.run(
            [
                "npm", "install", "--prefix", str(CACHE), "--no-audit", "--no-fund",
                "--omit=dev", "--prefer-offline", "--no-save", f"node-red@{NODE_RED_VERSION}",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )  # fmt: skip
        if result.returncode != 0:
            pytest.fail(f"npm install node-red@{NODE_RED_VERSION} failed:\n{result.stderr}")
    assert installed_version() == NODE_RED_VERSION
    return RED_JS


SETTINGS_JS = """module.exports = {{
    uiHost: "127.0.0.1",
    uiPort: {port},
    flowFile: "flows.json",
    credentialSecret: false,
    telemetry: {{ enabled: false }},
    diagnostics: {{ enabled: false }},
    editorTheme: {{ tours: false, projects: {{ enabled: false }} }},
    logging: {{ console: {{ level: "info" }} }},
}};
"""


def imported_flow(broker_port: int) -> list[dict[str, Any]]:
    """The example flow as shipped, with its broker node set to the test broker."""
    flow: list[dict[str, Any]] = json.loads(FLOW.read_text(encoding="utf-8"))
    (broker,) = [node for node in flow if node["type"] == "mqtt-broker"]
    broker.update(broker="127.0.0.1", port=str(broker_port))
    return flow


class Editor:
    """What a user of the Node-RED editor sees: debug messages and node statuses."""

    def __init__(self, base: str, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.base = base
        self.ws = ws
        self.debug: list[dict[str, Any]] = []
        self.statuses: dict[str, str] = {}
        self._changed = asyncio.Condition()

    async def collect(self) -> None:
        async for message in self.ws:
            if message.type is not aiohttp.WSMsgType.TEXT:
                continue
            async with self._changed:
                for item in json.loads(message.data):
                    if item["topic"] == "debug":
                        self.debug.append(item["data"])
                    elif item["topic"].startswith("status/"):
                        text = (item.get("data") or {}).get("text", "")
                        self.statuses[item["topic"].removeprefix("status/")] = text
                self._changed.notify_all()

    async def wait(self, check: Callable[[], Any]) -> Any:
        async with asyncio.timeout(WAIT_S), self._changed:
            while not (found := check()):
                await self._changed.wait()
            return found

    async def wait_debug(
        self, node: str, predicate: Callable[[Any], bool], *, since: int = 0
    ) -> Any:
        def find() -> Any:
            for item in self.debug[since:]:
                if item["id"] == node and predicate(json.loads(item["msg"])):
                    return json.loads(item["msg"])
            return None

        return await self.wait(find)

    async def press(
        self,
        session: aiohttp.ClientSession,
        inject: str,
        payload: str = "",
        **numbers: float,
    ) -> None:
        """The inject node's button; with ``payload`` (and numeric ``numbers`` properties), as
        if edited in the inject dialog."""
        props = [{"p": "payload", "v": payload, "vt": "str"}]
        props += [{"p": name, "v": str(value), "vt": "num"} for name, value in numbers.items()]
        body = {"__user_inject_props__": props}
        async with session.post(
            f"{self.base}/inject/{inject}", json=body if payload else None
        ) as response:
            assert response.status == 200, await response.text()


def prepare_user_dir(user_dir: Path, broker_port: int) -> int:
    """A fresh Node-RED user dir holding the imported flow; returns the editor's port."""
    port = free_port()
    user_dir.mkdir()
    (user_dir / "flows.json").write_text(json.dumps(imported_flow(broker_port)))
    (user_dir / "settings.js").write_text(SETTINGS_JS.format(port=port))
    return port


def log_text(user_dir: Path) -> str:
    return (user_dir / "node-red.log").read_text(errors="replace")


@contextlib.asynccontextmanager
async def running_node_red(red_js: Path, user_dir: Path, broker_port: int) -> AsyncIterator[str]:
    port = prepare_user_dir(user_dir, broker_port)
    log = open(user_dir / "node-red.log", "wb")  # noqa: ASYNC230, SIM115 (closed below)
    process = await asyncio.create_subprocess_exec(
        "node", str(red_js), "--userDir", str(user_dir), "--settings",
        str(user_dir / "settings.js"),
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        async with asyncio.timeout(60):
            while "Connected to broker" not in log_text(user_dir):
                if process.returncode is not None:
                    raise AssertionError(log_text(user_dir))
                await asyncio.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        if process.returncode is None:
            # Its own process group, so nothing it spawned outlives the test.
            os.killpg(process.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                os.killpg(process.pid, signal.SIGKILL)
                await process.wait()
        log.close()


def flow_agent(
    agent_settings: Callable[..., Settings], *, width: int, height: int, bitrate_kbps: int
) -> Settings:
    """The stream-only agent the example flow talks to. The flow asks for quality "hub";
    a smaller picture keeps the test light."""
    hub = {"width": width, "height": height, "fps": 15, "bitrate_kbps": bitrate_kbps}
    return agent_settings(
        node_id=NODE_ID,
        cast={"device": "none"},
        stream={"http_host": "127.0.0.1", "http_port": 0, "public_host": "127.0.0.1"},
        qualities={"hub": hub},
        snapshot={"enabled": False},
    )


@contextlib.asynccontextmanager
async def flow_editor(
    settings: Settings, node_red: Path, tmp_path: Path, mosquitto: Mosquitto
) -> AsyncIterator[tuple[Editor, aiohttp.ClientSession, str]]:
    """The agent, Node-RED running the example flow, and its editor following the flow's
    debug messages and node statuses: (editor, an HTTP session, Node-RED's base URL)."""
    async with (
        real_agent(settings),
        running_node_red(node_red, tmp_path / "node-red", mosquitto.port) as base,
        aiohttp.ClientSession() as http,
        http.ws_connect(f"{base}/comms") as ws,
    ):
        editor = Editor(base, ws)
        collecting = asyncio.create_task(editor.collect())
        try:
            await ws.send_str(json.dumps({"subscribe": "debug"}))
            await ws.send_str(json.dumps({"subscribe": "status/#"}))
            yield editor, http, base
        finally:
            collecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await collecting


async def test_flow_starts_a_page_and_shows_status_and_events(
    node_red: Path,
    mosquitto: Mosquitto,
    agent_settings: Callable[..., Settings],
    page_server: PageServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    settings = flow_agent(agent_settings, width=640, height=360, bitrate_kbps=600)
    page = page_server.color("3366cc")
    async with flow_editor(settings, node_red, tmp_path, mosquitto) as (editor, http, base):
        # The agent's retained status reached the flow when it subscribed: idle.
        await editor.wait(lambda: editor.statuses.get("pagecast.show.status") == "idle")
        await editor.wait(lambda: editor.statuses.get("pagecast.show.availability") == "online")

        await editor.press(http, "pagecast.inject.start", page)
        response = await editor.wait_debug(
            "pagecast.debug.response", lambda m: m["payload"]["command"] == "start"
        )
        assert response["topic"] == f"{settings.topic_root}/response/start"
        assert response["payload"]["ok"] is True
        assert response["payload"]["id"].startswith("node-red-")
        status = await editor.wait_debug(
            "pagecast.debug.status", lambda s: s["state"] == "streaming"
        )
        assert status["url"] == page
        await editor.wait(
            lambda: editor.statuses.get("pagecast.show.status") == f"streaming: {page}"
        )
        started = await editor.wait_debug("pagecast.debug.event", lambda e: True)
        assert started["event"] == "started"
        # The flow keeps the whole status (flow context, as the editor's Context tab shows):
        # the agent streams the flow's default quality, at a URL that really serves it.
        async with http.get(f"{base}/context/flow/pagecast.flow/pagecast_status") as answer:
            kept = json.loads((await answer.json())["msg"])
        assert (kept["quality"], kept["request_id"]) == ("hub", response["payload"]["id"])
        async with http.get(kept["stream_url"]) as playlist:
            assert playlist.status == 200
            assert "#EXTM3U" in await playlist.text()

        mark = len(editor.debug)
        await editor.press(http, "pagecast.inject.stop")
        await editor.wait_debug(
            "pagecast.debug.event", lambda e: e["event"] == "stopped", since=mark
        )
        await editor.wait_debug("pagecast.debug.status", lambda s: s["state"] == "idle", since=mark)

        await editor.press(http, "pagecast.inject.status")
        answer = await editor.wait_debug(
            "pagecast.debug.response", lambda m: m["payload"]["command"] == "status"
        )
        assert answer["payload"]["status"]["state"] == "idle"


async def test_flow_rings_the_doorbell_and_goes_back(
    node_red: Path,
    mosquitto: Mosquitto,
    agent_settings: Callable[..., Settings],
    page_server: PageServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    settings = flow_agent(agent_settings, width=320, height=180, bitrate_kbps=400)
    dashboard, camera = page_server.color("3366cc"), page_server.color("cc6633")
    async with flow_editor(settings, node_red, tmp_path, mosquitto) as (editor, http, _):
        await editor.wait(lambda: editor.statuses.get("pagecast.show.availability") == "online")
        await editor.press(http, "pagecast.inject.start", dashboard)
        await editor.wait(
            lambda: editor.statuses.get("pagecast.show.status") == f"streaming: {dashboard}"
        )

        mark = len(editor.debug)
        await editor.press(http, "pagecast.inject.doorbell", camera, duration=4)
        response = await editor.wait_debug(
            "pagecast.debug.response", lambda m: m["payload"]["command"] == "start", since=mark
        )
        assert response["payload"]["id"].startswith("node-red-doorbell-")
        interrupted = await editor.wait_debug(
            "pagecast.debug.event", lambda e: e["event"] == "interrupted", since=mark
        )
        assert interrupted["url"] == camera
        assert interrupted["revert_to"] == dashboard
        await editor.wait(
            lambda: editor.statuses.get("pagecast.show.status") == f"streaming: {camera}"
        )
        reverted = await editor.wait_debug(
            "pagecast.debug.event", lambda e: e["event"] == "reverted", since=mark
        )
        assert (reverted["url"], reverted["in_place"]) == (dashboard, True)
        await editor.wait(
            lambda: editor.statuses.get("pagecast.show.status") == f"streaming: {dashboard}"
        )
