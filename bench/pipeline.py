"""Pipeline benchmark: start and switch latency, and CPU cost against a plain reference.

    .venv/bin/python bench/pipeline.py [--runs 5] [--seconds 10]

Prints a table at 720p30 (medians over the runs):

- cold start: browser not warm (``browser.keep_warm: false``): start → first segment listed
- warm start: browser warm: start → first segment listed in the playlist
- switch: switch command → first segment showing the new page listed in the playlist
- CPU: process-tree CPU seconds per streamed second on a static dashboard and an animated
  page, for the agent (snapshots off and on) and for a reference pipeline run in the same
  invocation: Xvfb + ``chromium --kiosk`` + ffmpeg x11grab with the same encoder settings,
  no agent. The agent's figure includes its own Python process and Playwright's driver.

Everything runs locally (test pages from tests/support/pages.py); nothing is cast.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from loguru import logger

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from support.pages import PageServer

from agent.config import Settings
from agent.stream.backend import StreamBackend
from agent.stream.browser import sandbox_enabled
from agent.stream.display import Display
from agent.stream.encoder import EncoderSpec, ffmpeg_args
from agent.stream.hls import MASTER_PLAYLIST, MEDIA_PLAYLIST, read_playlist
from agent.stream.process import ChildProcess
from agent.supervisor.session import StreamRequest
from agent.supervisor.state import EventName

QUALITY = "720p"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class Listener:
    def __init__(self) -> None:
        self.stream_url: str | None = None

    def set_stream_url(self, stream_url: str) -> None:
        self.stream_url = stream_url

    def set_title(self, title: str | None) -> None:
        pass

    def set_player(self, *, player_state: str | None, device: str | None) -> None:
        pass

    def event(self, name: EventName, **data: Any) -> None:
        logger.warning("unexpected event during the benchmark: {} {}", name, data)

    def ended(self, error: Any, reason: str) -> None:
        logger.error("session ended during the benchmark: {} {}", error, reason)


class NoDevice:
    async def resolve(self, spec: str | None) -> None:
        return None


# -- CPU ---------------------------------------------------------------------------------------


def _cpu_of(pid: int) -> float:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _tree(root: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        parents.setdefault(ppid, []).append(int(entry))
    found, stack = [], [root]
    while stack:
        for child in parents.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def tree_cpu(include_self: bool) -> dict[int, float]:
    pids = _tree(os.getpid()) + ([os.getpid()] if include_self else [])
    return {pid: _cpu_of(pid) for pid in pids}


async def cpu_per_second(seconds: float, include_self: bool, only: int | None = None) -> float:
    """CPU seconds per second of the process tree (or of the one process ``only``)."""
    before = tree_cpu(include_self)
    started = time.monotonic()
    await asyncio.sleep(seconds)
    after = tree_cpu(include_self)
    elapsed = time.monotonic() - started
    # Processes that appeared meanwhile count from zero; vanished ones are not expected.
    used = sum(after[pid] - before.get(pid, 0.0) for pid in after if only in (None, pid))
    return used / elapsed


# -- agent ---------------------------------------------------------------------------------------


def settings(work_dir: Path, *, keep_warm: bool, snapshot: float | None) -> Settings:
    return Settings(
        node_id="bench",
        stream={"http_port": 0, "work_dir": str(work_dir)},
        browser={"keep_warm": keep_warm},
        snapshot={"enabled": snapshot is not None, "interval": snapshot or 5.0},
        cast={"device": "none"},
        homeassistant={"enabled": False},
    )


@contextlib.asynccontextmanager
async def backend(
    work_dir: Path, *, keep_warm: bool, snapshot: bool
) -> AsyncIterator[StreamBackend]:
    async with StreamBackend(
        settings(work_dir, keep_warm=keep_warm, snapshot=snapshot), NoDevice()
    ) as running:
        if keep_warm:
            # The agent warms up in the background; wait for it like an agent that ran a while.
            current = None
            while current is None or not current.alive:
                await asyncio.sleep(0.05)
                current = running.screens.current
            await asyncio.sleep(0.5)
        yield running


async def timed_start(work_dir: Path, url: str, *, keep_warm: bool) -> float:
    async with backend(work_dir, keep_warm=keep_warm, snapshot=5.0) as running:
        session = running.create_session(
            "bench", StreamRequest(url=url, quality=QUALITY), Listener()
        )
        started = time.perf_counter()
        # Stream-only start() returns when the first segment is listed in the playlist.
        await session.start()
        elapsed = time.perf_counter() - started
        await session.stop()
        return elapsed


async def last_frame_rgb(http: aiohttp.ClientSession, url: str) -> tuple[int, int, int]:
    async with http.get(url) as response:
        data = await response.read()
    process = await asyncio.create_subprocess_exec(
        "ffmpeg", "-v", "error", "-i", "pipe:0", "-vf", "scale=4:4:flags=area",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-update", "1", "pipe:1",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await process.communicate(data)
    last = out[-48:]
    return (sum(last[0::3]) // 16, sum(last[1::3]) // 16, sum(last[2::3]) // 16)


async def switch_latencies(work_dir: Path, pages: PageServer, runs: int) -> list[float]:
    colours = [("ff0000", (255, 0, 0)), ("0000ff", (0, 0, 255))]
    latencies = []
    async with (
        backend(work_dir, keep_warm=True, snapshot=5.0) as running,
        aiohttp.ClientSession() as http,
    ):
        listener = Listener()
        request = StreamRequest(url=pages.color("00ff00"), quality=QUALITY)
        session = running.create_session("bench", request, listener)
        await session.start()
        assert listener.stream_url is not None
        media_url = listener.stream_url.replace(MASTER_PLAYLIST, MEDIA_PLAYLIST)
        try:
            for run in range(runs):
                await asyncio.sleep(1.3)  # land the switch at different points of a segment
                rgb_hex, rgb = colours[run % 2]
                known = await listed_segments(http, media_url)
                started = time.perf_counter()
                await session.switch(f"bench-{run}", StreamRequest(pages.color(rgb_hex), QUALITY))
                latencies.append(await first_showing(http, media_url, known, rgb) - started)
        finally:
            await session.stop()
    return latencies


async def listed_segments(http: aiohttp.ClientSession, media_url: str) -> list[str]:
    async with http.get(media_url) as response:
        text = await response.text()
    return [line for line in text.splitlines() if line and not line.startswith("#")]


async def first_showing(
    http: aiohttp.ClientSession, media_url: str, known: list[str], rgb: tuple[int, int, int]
) -> float:
    """When the first new segment whose last picture shows ``rgb`` was listed."""
    seen = set(known)
    listed_at: list[tuple[str, float]] = []
    while True:
        for name in await listed_segments(http, media_url):
            if name not in seen:
                seen.add(name)
                listed_at.append((name, time.perf_counter()))
        while listed_at:
            name, at = listed_at.pop(0)
            got = await last_frame_rgb(http, media_url.rsplit("/", 1)[0] + "/" + name)
            if all(abs(a - b) < 40 for a, b in zip(got, rgb, strict=True)):
                return at
        await asyncio.sleep(0.02)


async def agent_cpu(
    work_dir: Path, url: str, seconds: float, *, snapshot: float | None
) -> tuple[float, float]:
    """CPU per second of the agent's whole tree and of its ffmpeg alone."""
    async with backend(work_dir, keep_warm=True, snapshot=snapshot) as running:
        session = running.create_session(
            "bench", StreamRequest(url=url, quality=QUALITY), Listener()
        )
        await session.start()
        try:
            await asyncio.sleep(2)  # past the page's start-up work
            [ffmpeg] = [pid for pid in _tree(os.getpid()) if _name(pid) == "ffmpeg"]
            total, alone = await asyncio.gather(
                cpu_per_second(seconds, include_self=True),
                cpu_per_second(seconds, include_self=True, only=ffmpeg),
            )
            return total, alone
        finally:
            await session.stop()


def _name(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return ""
    return stat[stat.index("(") + 1 : stat.rindex(")")]


# -- reference -------------------------------------------------------------------------------


async def reference_cpu(work_dir: Path, url: str, seconds: float) -> float:
    """Xvfb + chromium --kiosk + ffmpeg x11grab with the agent's encoder settings; no agent."""
    base = Settings()
    preset = base.qualities[QUALITY]
    display = Display(preset.width, preset.height)
    await display.start()
    profile = tempfile.mkdtemp(prefix="bench-profile-", dir=work_dir)
    out = Path(tempfile.mkdtemp(prefix="bench-hls-", dir=work_dir))
    chromium: ChildProcess | None = None
    ffmpeg: ChildProcess | None = None
    try:
        argv = [
            str(base.browser.executable),
            "--kiosk",
            f"--window-size={preset.width},{preset.height}",
            "--window-position=0,0",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            f"--user-data-dir={profile}",
            *([] if sandbox_enabled(base.browser) else ["--no-sandbox"]),
            url,
        ]
        os.environ["DISPLAY"] = display.name
        chromium = await ChildProcess.spawn("reference-chromium", argv)
        await asyncio.sleep(2)  # Chromium up and the page loaded
        spec = EncoderSpec(
            display.name,
            preset.width,
            preset.height,
            preset.fps,
            preset.bitrate_kbps,
            base.stream.segment_seconds,
            base.stream.playlist_size,
            None,
        )
        ffmpeg = await ChildProcess.spawn(
            "reference-ffmpeg", ffmpeg_args(spec, out, append=False, tuned=False)
        )
        await wait_for_segment(out)
        await asyncio.sleep(2)
        return await cpu_per_second(seconds, include_self=False)
    finally:
        for process in (ffmpeg, chromium):
            if process is not None:
                await process.stop()
        await display.stop()
        os.environ.pop("DISPLAY", None)


async def wait_for_segment(directory: Path) -> None:
    async with asyncio.timeout(15):
        while True:
            playlist = read_playlist(directory)
            if playlist is not None and playlist.segments:
                return
            await asyncio.sleep(0.05)


# -- report ----------------------------------------------------------------------------------


async def repeat(runs: int, measure: Callable[[], Awaitable[float]]) -> list[float]:
    return [await measure() for _ in range(runs)]


def median(values: list[float]) -> float:
    return statistics.median(values)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per figure (median)")
    parser.add_argument("--seconds", type=float, default=10.0, help="CPU sampling window")
    args = parser.parse_args()
    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    work_dir = Path(tempfile.mkdtemp(prefix="pagecast-bench-"))
    rows: list[tuple[str, str, str]] = []
    with PageServer() as pages:
        dashboard, animated = pages.url("/dashboard"), pages.url("/animated")
        cold = await repeat(args.runs, lambda: timed_start(work_dir, dashboard, keep_warm=False))
        rows.append(("cold start (s)", f"{median(cold):.2f}", "≤ 2.5"))
        warm = await repeat(args.runs, lambda: timed_start(work_dir, dashboard, keep_warm=True))
        rows.append(("warm start (s)", f"{median(warm):.2f}", "≤ 1.5"))
        switches = await switch_latencies(work_dir, pages, args.runs)
        rows.append(("switch (s)", f"{median(switches):.2f}", "≤ 1.0"))
        for name, url in (("dashboard", dashboard), ("animated", animated)):
            reference: list[float] = []
            runs: dict[float | None, list[tuple[float, float]]] = {None: [], 5.0: [], 0.5: []}
            for _ in range(args.runs):  # interleaved, so load from elsewhere hits all alike
                reference.append(await reference_cpu(work_dir, url, args.seconds))
                for interval, results in runs.items():
                    results.append(await agent_cpu(work_dir, url, args.seconds, snapshot=interval))
            ref = median(reference)
            plain = median([total for total, _ in runs[None]])
            plain_ffmpeg = median([alone for _, alone in runs[None]])
            rows.append((f"CPU {name}: reference (cpu-s/s)", f"{ref:.3f}", ""))
            rows.append(
                (
                    f"CPU {name}: agent (cpu-s/s)",
                    f"{plain:.3f} ({plain / ref:.2f}x)",
                    "≤ 0.9x reference",
                )
            )
            for interval in (5.0, 0.5):
                total = median([t for t, _ in runs[interval]])
                extra = median([a for _, a in runs[interval]]) - plain_ffmpeg
                rows.append(
                    (
                        f"CPU {name}: agent + snapshot every {interval:g} s",
                        f"{total:.3f} ({total / ref:.2f}x)",
                        f"ffmpeg alone {extra:+.3f} vs no snapshots",
                    )
                )
    width = max(len(row[0]) for row in rows)
    value_width = max(len(row[1]) for row in rows)
    print(f"\npagecast pipeline benchmark, {QUALITY}, median of {args.runs} runs")
    print(f"{'figure'.ljust(width)}  {'measured'.ljust(value_width)}  target")
    for label, value, target in rows:
        print(f"{label.ljust(width)}  {value.ljust(value_width)}  {target}".rstrip())
    print(f"\nraw: cold={cold} warm={warm} switch={switches}")


if __name__ == "__main__":
    asyncio.run(main())
