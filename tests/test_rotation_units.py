"""The rotation's schedule against a stage double: order, skipping, next, per-page seconds.
With the real pipeline and device: test_scenes_e2e.py."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from agent.errors import ErrorCode, PagecastError
from agent.stream.rotation import Rotation
from agent.supervisor.session import RotationPage, StreamRequest


@dataclass
class Stage:
    failing: set[str] = field(default_factory=set)
    prepared: str | None = None
    front: str = "a"
    log: list[str] = field(default_factory=list)

    async def prepare(self, url: str) -> None:
        self.log.append(f"prepare:{url}")
        await asyncio.sleep(0)
        if url in self.failing:
            raise PagecastError(ErrorCode.PAGE_LOAD_FAILED, f"{url}: HTTP 500")
        self.prepared = url

    async def show_prepared(self) -> None:
        assert self.prepared is not None
        self.front, self.prepared = self.prepared, None

    async def reload(self) -> None:
        pass

    async def title(self) -> str | None:
        return self.front


def rotation(*pages: RotationPage, rotate_s: float | None = 0.05) -> StreamRequest:
    return StreamRequest(url=pages[0].url, quality="720p", pages=pages, rotate_s=rotate_s)


async def run_until(
    request: StreamRequest, stage: Stage, shows: int, *, advance_at: int | None = None
) -> tuple[list[tuple[int, str, float]], list[tuple[int, str, str]]]:
    shown: list[tuple[int, str, float]] = []
    errors: list[tuple[int, str, str]] = []
    done = asyncio.Event()

    async def on_show(index: int, url: str) -> None:
        shown.append((index, url, time.monotonic()))
        if len(shown) >= shows:
            done.set()

    schedule = Rotation(request, stage, on_show, lambda i, u, r: errors.append((i, u, r)))
    task = asyncio.create_task(schedule.run())
    if advance_at is not None:
        schedule.advance()
    await asyncio.wait_for(done.wait(), 5)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return shown, errors


async def test_pages_take_turns_in_order() -> None:
    stage = Stage()
    request = rotation(RotationPage("a"), RotationPage("b"), RotationPage("c"))
    shown, errors = await run_until(request, stage, 4)
    assert [(i, u) for i, u, _ in shown] == [(1, "b"), (2, "c"), (0, "a"), (1, "b")]
    assert errors == []


async def test_a_failing_page_is_skipped_every_round() -> None:
    stage = Stage(failing={"b"})
    request = rotation(RotationPage("a"), RotationPage("b"), RotationPage("c"))
    shown, errors = await run_until(request, stage, 4)
    assert [u for _, u, _ in shown] == ["c", "a", "c", "a"]
    assert len(errors) >= 2  # every round that passes "b"
    assert {(i, u) for i, u, _ in errors} == {(1, "b")}
    assert "HTTP 500" in errors[0][2]


async def test_nothing_else_loads_so_the_page_stays() -> None:
    stage = Stage(failing={"b"})
    request = rotation(RotationPage("a"), RotationPage("b"))
    schedule = Rotation(request, stage, lambda i, u: asyncio.sleep(0), lambda i, u, r: None)
    task = asyncio.create_task(schedule.run())
    await asyncio.sleep(0.3)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert stage.front == "a"
    assert stage.log.count("prepare:b") >= 3  # tried again every round


async def test_next_shows_the_next_page_at_once_and_seconds_per_page() -> None:
    stage = Stage()
    request = rotation(RotationPage("a", seconds=30), RotationPage("b", seconds=0.05))
    started = time.monotonic()
    shown, _ = await run_until(request, stage, 1, advance_at=0)
    assert shown[0][1] == "b"
    assert shown[0][2] - started < 1  # not the 30 s page "a" has
