"""A password inside a start URL reaches the browser and nothing else.

``http://user:pass@host/`` must load with its credentials, but the retained status, events,
responses (MQTT and webhook), Home Assistant's sensors and the logs show ``user:***@``.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from loguru import logger
from support.agent import AUTH, TOKEN, running
from support.listener import RecordingListener
from support.mqtt import Mosquitto
from support.pages import PageServer
from support.streaming import OneDevice, RecordingDevice, running_backend

from agent.config import LogSettings, Settings
from agent.errors import ErrorCode, PagecastError
from agent.extensions.homeassistant import discovery_document
from agent.logs import setup_logging
from agent.redact import redact_url
from agent.supervisor.session import StreamRequest

PASSWORD = "s3cr3t-Pa55"
URL = f"http://viewer:{PASSWORD}@dash.test:8123/lovelace/0"
MASKED = "http://viewer:***@dash.test:8123/lovelace/0"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (URL, MASKED),
        ("https://u:p@ss@h:8/a?b=c@d", "https://u:***@h:8/a?b=c@d"),  # the last @ ends it
        ("http://:pw@h/", "http://:***@h/"),
        ("http://host/a@b", "http://host/a@b"),  # no credentials: an @ in the path
        ("http://token@host/", "http://token@host/"),  # a user name only
        ("http://h/?next=http://x:y@z", "http://h/?next=http://x:***@z"),
        ("mailto:a@b.c", "mailto:a@b.c"),
        (f"net::ERR_CONNECTION_REFUSED at {URL}", f"net::ERR_CONNECTION_REFUSED at {MASKED}"),
        (json.dumps({"url": URL, "x": "d:e@f"}), json.dumps({"url": MASKED, "x": "d:e@f"})),
    ],
)
def test_redact_url_masks_every_url_password(text: str, expected: str) -> None:
    assert redact_url(text) == expected
    assert redact_url(None) is None


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    lines = io.StringIO()
    setup_logging(LogSettings(json_lines=True, level="DEBUG"), sink=lines)
    try:
        yield lines
    finally:
        setup_logging(LogSettings())


def test_both_log_formats_mask_messages_bound_urls_and_tracebacks() -> None:
    for settings in (LogSettings(level="DEBUG"), LogSettings(json_lines=True, level="DEBUG")):
        sink = io.StringIO()
        setup_logging(settings, sink=sink)
        try:
            log = logger.bind(session_id="s1", url=URL, quality="hub")
            log.info("loading {}", URL)
            try:
                raise PagecastError(ErrorCode.PAGE_LOAD_FAILED, f"net::ERR_FAILED at {URL}")
            except PagecastError:
                log.exception("page failed")
        finally:
            setup_logging(LogSettings())
        text = sink.getvalue()
        assert PASSWORD not in text, settings
        assert text.count(MASKED) >= 4, text  # message, bound url twice, traceback


async def test_status_events_responses_and_logs_never_show_the_password(
    mosquitto: Mosquitto,
    agent_settings: Callable[..., Settings],
    log_lines: io.StringIO,
) -> None:
    settings = agent_settings(api={"enabled": True, "token": TOKEN})
    async with running(settings, mosquitto) as agent:
        root = agent.root
        mark = agent.mqtt.mark()
        started = await agent.mqtt.command(root, "start", {"url": URL, "id": "r1"})
        assert started["ok"] is True
        status = await agent.mqtt.wait_json(
            f"{root}/status", lambda s: s["state"] == "streaming", since=mark
        )
        # The browser gets the real URL; everything published shows the masked one.
        assert agent.factory.sessions[-1].request.url == URL
        assert status["url"] == MASKED
        event = await agent.mqtt.wait_json(
            f"{root}/event", lambda e: e["event"] == "started", since=mark
        )
        assert event["url"] == MASKED
        url_sensor = discovery_document(settings)["components"]["url"]
        assert url_sensor["state_topic"] == f"{root}/status"  # HA's URL sensor reads the status

        # HA's quality select sends status.url back: it means the URL on screen, password
        # and all, at the new quality.
        again = await agent.mqtt.command(root, "start", {"url": MASKED, "quality": "1080p"})
        assert again["changed"] is True
        assert (
            agent.factory.sessions[-1].request.url,
            agent.factory.sessions[-1].request.quality,
        ) == (URL, "1080p")
        await agent.mqtt.wait_json(
            f"{root}/status", lambda s: s["quality"] == "1080p" and s["state"] == "streaming"
        )

        answered = await agent.mqtt.command(root, "status", {})
        assert answered["status"]["url"] == MASKED
        async with agent.http.get(f"{agent.base}/status", headers=AUTH) as response:
            assert (await response.json())["status"]["url"] == MASKED

        # A failure that quotes the URL (as Chromium's errors do) is masked too.
        agent.factory.fail_with = PagecastError(
            ErrorCode.PAGE_LOAD_FAILED, f"net::ERR_CONNECTION_REFUSED at {URL}"
        )
        mark = agent.mqtt.mark()
        await agent.mqtt.command(root, "start", {"url": URL + "?again"})
        failed = await agent.mqtt.wait_json(
            f"{root}/status", lambda s: s["state"] == "error", since=mark
        )
        assert failed["error"]["message"] == f"net::ERR_CONNECTION_REFUSED at {MASKED}"
        event = await agent.mqtt.wait_json(
            f"{root}/event", lambda e: e["event"] == "failed", since=mark
        )
        assert event["error"]["message"] == f"net::ERR_CONNECTION_REFUSED at {MASKED}"

        retained = [m.payload for m in agent.mqtt.messages(f"{root}/status")]
        events = [m.payload for m in agent.mqtt.messages(f"{root}/event")]
        responses = [m.payload for m in agent.mqtt.messages(f"{root}/response/start")]
        for payload in retained + events + responses:
            assert PASSWORD.encode() not in payload

    logged = log_lines.getvalue()
    assert MASKED in logged  # the bound url and the messages are there, masked
    assert PASSWORD not in logged


async def test_the_tv_never_shows_the_password(tmp_path: Path, page_server: PageServer) -> None:
    """A page without a title is announced to the TV by its URL: masked, like everywhere."""
    device = RecordingDevice()
    url = page_server.url("/untitled").replace("http://", f"http://viewer:{PASSWORD}@")
    small = {"width": 640, "height": 360, "fps": 15, "bitrate_kbps": 600}
    async with running_backend(
        tmp_path,
        OneDevice(device),
        qualities={"small": small},
        stream={"http_port": 0, "work_dir": str(tmp_path), "default_quality": "small"},
    ) as backend:
        session = backend.create_session(
            "s1", StreamRequest(url=url, quality="small"), RecordingListener()
        )
        try:
            await session.start()
        finally:
            await session.stop()
    assert device.titles == [url.replace(PASSWORD, "***")]
