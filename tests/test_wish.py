"""The wish survives restarts (issue 8.1): the file, its atomic writes, the agent resuming it."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import pytest
from conftest import StartAgent
from loguru import logger
from support.mqtt import probe
from support.wish_writer import wish_number

from agent.config import Settings, default_state_dir
from agent.supervisor.session import StreamRequest
from agent.supervisor.state import utcnow
from agent.supervisor.supervisor import Wish
from agent.wish import WishFile, WishFileError, WishKeeper, from_json, to_json

WRITER = Path(__file__).parent / "support" / "wish_writer.py"


@pytest.fixture
def warnings() -> Iterator[list[str]]:
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m)), level="WARNING", format="{message}")
    yield lines
    logger.remove(sink)


# -- the format ----------------------------------------------------------------------------------


def test_a_wish_round_trips_through_json() -> None:
    request = StreamRequest(
        "http://ha.local/lovelace/0", "hub", device="Kitchen", auth="ha", duration_s=3600.0
    )
    wish = Wish("abc123", request, datetime(2030, 5, 1, 12, 0, tzinfo=UTC))
    data = json.loads(json.dumps(to_json(wish)))
    assert data["request"]["auth"] == "ha"  # the profile's name, never its secrets
    assert from_json(Wish, data) == wish


def test_unknown_keys_are_ignored_and_missing_ones_defaulted() -> None:
    """A file written by a newer or older agent still loads."""
    data = {
        "session_id": "s1",
        "request": {"url": "http://a/", "quality": "720p", "rotation": {"every_s": 30}},
        "revert_to": None,
    }
    wish = from_json(Wish, data)
    assert wish == Wish("s1", StreamRequest("http://a/", "720p"), None)


@dataclass(frozen=True)
class _Later:
    """Field types a later feature may add to the wish."""

    mode: Literal["rotate", "once"] = "once"
    urls: tuple[str, ...] = ()
    every_s: float | None = None
    at: datetime | None = None
    revert_to: StreamRequest | None = None


def test_later_field_types_round_trip() -> None:
    later = _Later("rotate", ("http://a/", "http://b/"), 30, datetime(2030, 1, 1, tzinfo=UTC))
    later = replace(later, revert_to=StreamRequest("http://base/", "720p"))
    assert from_json(_Later, json.loads(json.dumps(to_json(later)))) == later
    with pytest.raises(WishFileError):
        from_json(_Later, {"mode": "sometimes"})


@pytest.mark.parametrize(
    "data",
    [
        {"session_id": "s1"},  # no request
        {"session_id": "s1", "request": {"url": "http://a/", "quality": 720}},
        {"session_id": "s1", "request": {"url": "http://a/", "quality": "hd"}, "ends_at": "x"},
        ["not", "an", "object"],
    ],
)
def test_a_wish_that_does_not_fit_is_refused(data: object) -> None:
    with pytest.raises(WishFileError):
        from_json(Wish, data)


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b'{"version": 1, "wish": {"session_id": "s1", "request": {"url": "http://a/"',
        b"\xff\xfe\x00garbage",
        b'{"version": 1}',
        b'{"version": 1, "wish": {"session_id": 5}}',
    ],
    ids=["empty", "torn", "binary", "no-wish", "wrong-types"],
)
async def test_a_corrupt_file_is_one_warning_and_no_wish(
    tmp_path: Path, content: bytes, warnings: list[str]
) -> None:
    file = WishFile(tmp_path, "node")
    file.path.write_bytes(content)
    keeper = WishKeeper(file, asyncio.Queue())
    assert await keeper.load(Wish) is None
    assert len(warnings) == 1, warnings
    assert "starting idle" in warnings[0]


async def test_an_unreadable_file_is_one_warning_and_no_wish(
    tmp_path: Path, warnings: list[str]
) -> None:
    file = WishFile(tmp_path, "node")
    file.path.mkdir()  # a directory where the file should be: EISDIR on read
    assert await WishKeeper(file, asyncio.Queue()).load(Wish) is None
    assert len(warnings) == 1, warnings


# -- atomic writes ---------------------------------------------------------------------------------


@dataclass
class _Round:
    confirmed: int  # the last number the writer said it had written
    found: int  # the number the file held after the kill
    in_flight: bool  # a temp file was left: the kill landed inside a write


def _kill_a_writer(directory: Path, start: int, rng: random.Random) -> _Round:
    writer = subprocess.Popen(
        [sys.executable, str(WRITER), str(directory), "node", str(start)],
        stdout=subprocess.PIPE,
    )
    assert writer.stdout is not None
    first = writer.stdout.readline()  # writing from now on
    time.sleep(rng.uniform(0, 0.05))  # a random instant of its writing
    writer.kill()
    rest = writer.stdout.read()
    writer.wait()
    confirmed = int((first + rest).split()[-1])
    file = WishFile(directory, "node")
    in_flight = any(directory.glob(".node.wish.*.tmp"))
    wish = from_json(Wish, file.read())  # raises on a torn file
    found = int(wish.session_id[1:])
    assert wish == wish_number(found), "the file holds a wish that was never written"
    return _Round(confirmed, found, in_flight)


def test_kill_9_during_writes_leaves_the_old_or_the_new_wish(tmp_path: Path) -> None:
    """A writer process is SIGKILLed at random instants, many times: the file always holds
    the last wish it confirmed or the one it was writing, complete."""
    rng = random.Random(8)
    rounds: list[_Round] = []
    start = 0
    for _ in range(30):
        result = _kill_a_writer(tmp_path, start, rng)
        assert result.found in (result.confirmed, result.confirmed + 1), result
        rounds.append(result)
        start = result.found + 1
    # The next write removes what a killed one left behind.
    WishFile(tmp_path, "node").write(to_json(wish_number(start)))
    assert not any(tmp_path.glob(".node.wish.*.tmp"))
    caught = sum(r.in_flight for r in rounds)
    newer = sum(r.found == r.confirmed + 1 for r in rounds)
    print(f"\n30 kills: {caught} inside a write, {newer} found the unconfirmed newer wish")
    assert caught > 0, "no kill landed inside a write: the test proved nothing"


async def test_a_burst_of_changes_is_written_a_few_times_with_the_latest(tmp_path: Path) -> None:
    changes: asyncio.Queue[Wish | None] = asyncio.Queue()
    keeper = WishKeeper(WishFile(tmp_path, "node"), changes)
    running = asyncio.create_task(keeper.run())
    for number in range(300):
        changes.put_nowait(wish_number(number))
    await _until(lambda: changes.empty() and keeper.writes > 0)
    running.cancel()
    await asyncio.wait([running])
    assert 1 <= keeper.writes <= 3
    assert from_json(Wish, WishFile(tmp_path, "node").read()) == wish_number(299)


async def test_what_is_queued_when_the_keeper_stops_still_reaches_the_disk(tmp_path: Path) -> None:
    changes: asyncio.Queue[Wish | None] = asyncio.Queue()
    keeper = WishKeeper(WishFile(tmp_path, "node"), changes)
    running = asyncio.create_task(keeper.run())
    changes.put_nowait(wish_number(1))
    await asyncio.sleep(0)  # the keeper takes it and starts writing
    changes.put_nowait(wish_number(2))
    running.cancel()
    await asyncio.wait([running])
    assert from_json(Wish, WishFile(tmp_path, "node").read()) == wish_number(2)


# -- the agent -------------------------------------------------------------------------------------


def _saved(settings: Settings) -> Wish | None:
    data = WishFile(settings.state_dir, settings.node_id).read()
    return None if data is None else from_json(Wish, data)


def _save(settings: Settings, wish: Wish) -> None:
    WishFile(settings.state_dir, settings.node_id).write(to_json(wish))


async def _until(check: Callable[[], bool], within: float = 5.0) -> None:
    """Polls: the file system tells nobody when a file changes."""
    for _ in range(int(within / 0.02)):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"not within {within} s")


async def test_an_accepted_start_is_saved_and_a_stop_clears_it(
    agent_settings: Callable[..., Settings], start_agent: StartAgent
) -> None:
    settings = agent_settings(auth={"ha": {"origin": "http://a", "headers": {"X-T": "secret"}}})
    root = settings.topic_root
    async with start_agent(settings), probe(settings.mqtt.port, f"{root}/#") as client:
        started = await client.command(
            root, "start", {"url": "http://a/one", "quality": "480p", "auth": "ha"}
        )
        await _until(lambda: _saved(settings) is not None)
        saved = _saved(settings)
        assert saved is not None
        assert saved.session_id == started["session_id"]
        assert (saved.request.url, saved.request.quality) == ("http://a/one", "480p")
        assert saved.request.auth == "ha"
        text = (settings.state_dir / f"{settings.node_id}.wish.json").read_text()
        assert "secret" not in text
        await client.command(root, "stop", "")
        await _until(lambda: _saved(settings) is None)


async def test_the_end_of_the_duration_clears_the_wish(
    agent_settings: Callable[..., Settings], start_agent: StartAgent
) -> None:
    settings = agent_settings()
    root = settings.topic_root
    async with start_agent(settings), probe(settings.mqtt.port, f"{root}/#") as client:
        await client.command(root, "start", {"url": "http://a/short", "duration": 1})
        await _until(lambda: _saved(settings) is not None)
        await client.wait_json(f"{root}/event", lambda e: e["event"] == "finished", within=10)
        await _until(lambda: _saved(settings) is None)


async def test_a_clean_shutdown_keeps_the_wish(
    agent_settings: Callable[..., Settings], start_agent: StartAgent
) -> None:
    settings = agent_settings()
    root = settings.topic_root
    async with start_agent(settings) as agent, probe(settings.mqtt.port, f"{root}/#") as client:
        await client.command(root, "start", {"url": "http://a/kept"})
        await _until(lambda: _saved(settings) is not None)
        await agent.stop()
    saved = _saved(settings)
    assert saved is not None
    assert saved.request.url == "http://a/kept"


async def test_the_saved_wish_is_resumed_at_start_up(
    agent_settings: Callable[..., Settings], start_agent: StartAgent
) -> None:
    settings = agent_settings()
    root = settings.topic_root
    ends_at = utcnow() + timedelta(minutes=10)
    _save(settings, Wish("old", StreamRequest("http://a/resumed", "hub", duration_s=900), ends_at))
    async with probe(settings.mqtt.port, f"{root}/#") as client, start_agent(settings) as agent:
        resumed = await client.wait_json(f"{root}/event", lambda e: e["event"] == "resumed")
        assert (resumed["url"], resumed["quality"]) == ("http://a/resumed", "hub")
        status = await client.wait_json(f"{root}/status", lambda s: s["state"] == "streaming")
        assert (status["url"], status["quality"]) == ("http://a/resumed", "hub")
        # What was left of the duration, not the whole of it again.
        ends = datetime.fromisoformat(status["ends_at"].replace("Z", "+00:00"))
        assert abs((ends - ends_at).total_seconds()) < 5
        (session,) = agent.factory.sessions
        assert session.request.resumed
        events = [m.json()["event"] for m in client.messages(f"{root}/event")]
        assert "started" not in events


async def test_an_expired_wish_is_not_resumed(
    agent_settings: Callable[..., Settings], start_agent: StartAgent
) -> None:
    settings = agent_settings()
    past = utcnow() - timedelta(seconds=1)
    _save(settings, Wish("old", StreamRequest("http://a/over", "720p", duration_s=60), past))
    async with start_agent(settings) as agent:
        await _until(lambda: _saved(settings) is None)
        assert agent.factory.sessions == []


async def test_a_corrupt_file_starts_the_agent_idle(
    agent_settings: Callable[..., Settings], start_agent: StartAgent, warnings: list[str]
) -> None:
    settings = agent_settings()
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    (settings.state_dir / f"{settings.node_id}.wish.json").write_text('{"wish": {"sess')
    root = settings.topic_root
    async with start_agent(settings) as agent, probe(settings.mqtt.port, f"{root}/#") as client:
        status = await client.wait_json(f"{root}/status")
        assert status["state"] == "idle"
        assert agent.factory.sessions == []
        response = await client.command(root, "start", "http://a/after")
        assert response["ok"]
    assert [w for w in warnings if "saved wish" in w] != []


def test_the_default_state_dir_follows_xdg(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", "/srv/state")
    assert default_state_dir() == Path("/srv/state/pagecast")
    monkeypatch.setenv("XDG_STATE_HOME", "relative/ignored")  # the spec: absolute paths only
    assert default_state_dir() == Path.home() / ".local" / "state" / "pagecast"
    monkeypatch.delenv("XDG_STATE_HOME")
    assert default_state_dir() == Path.home() / ".local" / "state" / "pagecast"
