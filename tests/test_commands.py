"""Command parsing and the Dispatcher: every bad input gets the right code, good ones act."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from support.agent_double import DoubleFactory

from agent.commands import Dispatcher
from agent.commands.dispatcher import ReplayCache
from agent.commands.models import Response
from agent.commands.parse import MAX_DURATION_S, decode, parse_start
from agent.config import Settings
from agent.errors import ErrorCode, PagecastError
from agent.supervisor.state import State
from agent.supervisor.supervisor import Supervisor

SETTINGS = Settings(
    node_id="unit",
    auth={"ha": {"origin": "https://ha.local:8123", "headers": {"Authorization": "Bearer x"}}},
)


@dataclass
class Rig:
    dispatcher: Dispatcher
    supervisor: Supervisor
    factory: DoubleFactory

    async def send(self, command: str, payload: bytes | str | dict[str, object]) -> Response:
        if isinstance(payload, dict):
            payload = json.dumps(payload)
        if isinstance(payload, str):
            payload = payload.encode()
        return await self.dispatcher.handle(command, payload, source="test")

    async def settled(self) -> None:
        for _ in range(20):
            await asyncio.sleep(0.01)
            if self.supervisor.status.state in (State.IDLE, State.STREAMING, State.ERROR):
                return


@contextlib.asynccontextmanager
async def running_rig(settings: Settings) -> AsyncIterator[Rig]:
    """A Dispatcher over a running supervisor with session doubles, for ``settings``."""
    factory = DoubleFactory(start_delay_s=0.005)
    supervisor = Supervisor(factory)
    task = asyncio.create_task(supervisor.run())
    try:
        yield Rig(Dispatcher(supervisor, settings), supervisor, factory)
    finally:
        # Like the agent: settle to idle first, then end the (now idle) worker.
        await asyncio.wait_for(supervisor.shutdown(), 5)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert not factory.alive


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    async with running_rig(SETTINGS) as running:
        yield running


A = {"url": "http://a/"}
PAYLOAD, URL = ErrorCode.INVALID_PAYLOAD, ErrorCode.INVALID_URL
DURATION, QUALITY = ErrorCode.INVALID_DURATION, ErrorCode.UNKNOWN_QUALITY

BAD_STARTS: list[tuple[str, bytes | str | dict[str, object], ErrorCode, str]] = [
    ("empty payload", b"", PAYLOAD, "needs a URL"),
    ("whitespace only", b"  \n", PAYLOAD, "needs a URL"),
    ("malformed JSON", b'{"url": "http://a/"', PAYLOAD, "malformed JSON"),
    ("JSON array", b'["http://a/"]', PAYLOAD, "JSON list"),
    ("JSON number", b"42", PAYLOAD, "JSON int"),
    ("JSON null", b"null", PAYLOAD, "JSON NoneType"),
    ("binary garbage", b"\xff\xfe\x00\x81binary", PAYLOAD, "UTF-8"),
    ("100 KiB", b'{"url": "http://a/", "x": "' + b"a" * 102400 + b'"}', PAYLOAD, "limit"),
    ("unknown key", {**A, "qualty": "720p"}, PAYLOAD, "'qualty'"),
    ("duplicate key", b'{"url": "http://a/", "url": "http://b/"}', PAYLOAD, "duplicate"),
    ("missing url", {"quality": "720p"}, PAYLOAD, "url: required"),
    ("url not a string", {"url": 5}, URL, "url"),
    ("duration a string", {**A, "duration": "10"}, DURATION, "duration"),
    ("duration a bool", {**A, "duration": True}, DURATION, "duration"),
    ("force a string", {**A, "force": "yes"}, PAYLOAD, "force"),
    ("id a number", {**A, "id": 7}, PAYLOAD, "id"),
    ("device a number", {**A, "device": 1}, PAYLOAD, "device"),
    ("quality a number", {**A, "quality": 720}, QUALITY, "quality"),
    ("file:", "file:///etc/passwd", URL, "'file'"),
    ("javascript:", "javascript:alert(1)", URL, "'javascript'"),
    ("data:", "data:text/html,<h1>x</h1>", URL, "'data'"),
    ("chrome:", "chrome://settings", URL, "'chrome'"),
    ("chrome-extension:", "chrome-extension://abc/x.html", URL, "not allowed"),
    ("about:", "about:blank", URL, "'about'"),
    ("view-source:", "view-source:http://a/", URL, "'view-source'"),
    ("ftp:", {"url": "ftp://a/b"}, URL, "'ftp'"),
    ("ws:", {"url": "ws://a/b"}, URL, "'ws'"),
    ("blob:", {"url": "blob:http://a/uuid"}, URL, "'blob'"),
    ("relative path", "/dashboard", URL, "relative"),
    ("no scheme", "example.com/dash", URL, "relative"),
    ("no host", "http:///dash", URL, "no host"),
    ("bad port", "http://a:99999/", URL, "Port"),
    ("space in url", {"url": "http://a/ b"}, URL, "whitespace"),
    ("negative duration", {**A, "duration": -5}, DURATION, "> 0"),
    ("zero duration", {**A, "duration": 0}, DURATION, "> 0"),
    ("huge duration", {**A, "duration": MAX_DURATION_S + 1}, DURATION, "7 days"),
    ("NaN duration", b'{"url": "http://a/", "duration": NaN}', PAYLOAD, "NaN"),
    ("unknown quality", {**A, "quality": "4k"}, QUALITY, "720p"),
    ("unknown auth", {**A, "auth": "grafana"}, PAYLOAD, "known: ha"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("payload", "code", "needle"),
    [pytest.param(p, c, n, id=name) for name, p, c, n in BAD_STARTS],
)
async def test_bad_start_is_refused_and_changes_nothing(
    rig: Rig, payload: bytes | str | dict[str, object], code: ErrorCode, needle: str
) -> None:
    response = await rig.send("start", payload)
    assert response.ok is False
    assert response.error is not None
    assert response.error.code is code, response.error.message
    assert needle in response.error.message
    await rig.settled()
    assert rig.factory.sessions == []
    assert rig.supervisor.status.state is State.IDLE


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        pytest.param(b"http://a/dash", {"url": "http://a/dash", "quality": "720p"}, id="bare"),
        pytest.param(b'  "https://a/"  ', {"url": "https://a/"}, id="json string"),
        pytest.param(
            {"url": "https://ha.local:8123/lovelace/0?kiosk", "quality": "hub", "duration": 60,
             "device": "Kitchen", "auth": "ha", "force": True, "id": "x1"},
            {"url": "https://ha.local:8123/lovelace/0?kiosk", "quality": "hub", "duration_s": 60,
             "device": "Kitchen", "auth": "ha", "force": True, "request_id": "x1"},
            id="every key",
        ),
        pytest.param({"url": "HTTP://A/", "duration": None}, {"duration_s": None}, id="null"),
        pytest.param({"url": "http://a/", "duration": 604800}, {"duration_s": 604800}, id="7d"),
        pytest.param({"url": "http://a/", "duration": 0.5}, {"duration_s": 0.5}, id="float"),
    ],
)  # fmt: skip
def test_good_start_parses(payload: bytes | dict[str, object], expected: dict[str, object]) -> None:
    raw = json.dumps(payload).encode() if isinstance(payload, dict) else payload
    request = parse_start(decode(raw), SETTINGS)
    for key, value in expected.items():
        assert getattr(request, key) == value


async def test_start_answers_with_session_and_streams(rig: Rig) -> None:
    response = await rig.send("start", {"url": "http://a/", "id": "r1"})
    assert response.ok
    assert response.changed
    assert response.id == "r1"
    assert response.session_id
    await rig.settled()
    assert rig.supervisor.status.state is State.STREAMING
    assert rig.supervisor.status.session_id == response.session_id
    again = await rig.send("start", {"url": "http://a/", "id": "r2"})
    assert again.ok
    assert again.changed is False
    assert again.session_id == response.session_id
    forced = await rig.send("start", {"url": "http://a/", "force": True})
    assert forced.changed is True
    assert forced.session_id != response.session_id


async def test_stop_variants(rig: Rig) -> None:
    idle = await rig.send("stop", b"")
    assert idle.ok
    assert idle.changed is False
    assert (await rig.send("stop", b"{}")).ok
    started = await rig.send("start", "http://a/")
    await rig.settled()
    stopped = await rig.send("stop", {"id": "s"})
    assert stopped.ok
    assert stopped.changed is True
    assert stopped.id == "s"
    assert stopped.session_id == started.session_id
    await rig.settled()
    assert rig.supervisor.status.state is State.IDLE
    cases: list[tuple[str | dict[str, object], str]] = [
        ("now", "empty payload"),
        ({"id": "s2", "force": True}, "'force'"),
    ]
    for payload, needle in cases:
        refused = await rig.send("stop", payload)
        assert refused.error is not None
        assert refused.error.code is ErrorCode.INVALID_PAYLOAD
        assert needle in refused.error.message


async def test_status_takes_anything(rig: Rig) -> None:
    payloads: list[bytes | dict[str, object]] = [b"", b"\xff\x00garbage", b"[1,2]", {"id": "q"}]
    for payload in payloads:
        response = await rig.send("status", payload)
        assert response.ok
        assert response.status is not None
        assert response.status["state"] == "idle"
    assert (await rig.send("status", {"id": "q"})).id == "q"
    oversized = await rig.send("status", b"x" * (64 * 1024 + 1))
    assert oversized.error is not None
    assert oversized.error.code is ErrorCode.INVALID_PAYLOAD


async def test_unknown_command(rig: Rig) -> None:
    response = await rig.send("reboot", b"")
    assert response.error is not None
    assert response.error.code is ErrorCode.INVALID_PAYLOAD
    assert "start, stop, status" in response.error.message


async def test_repeated_id_is_answered_from_cache_not_redone(rig: Rig) -> None:
    first = await rig.send("start", {"url": "http://a/", "id": "dup"})
    await rig.settled()
    await rig.send("stop", {"id": "other"})
    await rig.settled()
    repeat = await rig.send("start", {"url": "http://a/", "id": "dup"})
    assert repeat == first
    await rig.settled()
    assert rig.supervisor.status.state is State.IDLE
    assert len(rig.factory.sessions) == 1
    # A refused command did nothing: fixed and resent under the same id, it runs.
    bad = await rig.send("start", {"url": "file:///x", "id": "e"})
    assert bad.error is not None
    fixed = await rig.send("start", {"url": "http://a/", "id": "e"})
    assert fixed.ok
    assert fixed.session_id != first.session_id
    # The same id on another command is a different request.
    assert (await rig.send("stop", {"id": "dup"})).command == "stop"


def test_replay_cache_forgets_after_ttl() -> None:
    now = [0.0]
    cache = ReplayCache(ttl_s=300, max_entries=3, clock=lambda: now[0])
    response = Response(ok=True, command="start", id="a")
    cache.put("start", "a", response)
    now[0] = 299.0
    assert cache.get("start", "a") == response
    now[0] = 300.5
    assert cache.get("start", "a") is None
    for key in "bcde":
        cache.put("start", key, response)
    assert cache.get("start", "b") is None  # bounded: the oldest went first
    assert cache.get("start", "e") == response


async def test_unexpected_supervisor_error_is_internal(rig: Rig) -> None:
    def explode(request: object) -> object:
        raise RuntimeError("boom")

    rig.supervisor.start = explode  # type: ignore[assignment,method-assign]
    response = await rig.send("start", {"url": "http://a/", "id": "i"})
    assert response.error is not None
    assert response.error.code is ErrorCode.INTERNAL
    assert response.id == "i"


def test_response_payload_shape() -> None:
    ok = Response(ok=True, command="start", id=None, session_id="s", changed=True)
    assert ok.to_payload() == {
        "ok": True,
        "command": "start",
        "id": None,
        "session_id": "s",
        "changed": True,
    }
    error = PagecastError(ErrorCode.INVALID_URL, "nope").info
    failed = Response.failure("start", "x", error).to_payload()
    assert failed == {
        "ok": False,
        "command": "start",
        "id": "x",
        "error": {"code": "INVALID_URL", "message": "nope"},
    }
