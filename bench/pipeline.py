"""Pipeline benchmark: every cost and speed figure of the README, against a plain reference.

    .venv/bin/python bench/pipeline.py            # full: 5 interleaved runs, 15 s windows
    .venv/bin/python bench/pipeline.py --quick    # 2 runs, 8 s windows, 720p only
    .venv/bin/python bench/pipeline.py --only latency --soak 600   # 10 minutes in both players
    .venv/bin/python bench/pipeline.py --only latency --soak 600 --soak-latency normal

Prints one table; every agent figure next to the reference measured in the same run:

- CPU: whole process trees (by cgroup when the machine allows, else by /proc), cpu-seconds
  per second, on a static dashboard (a clock ticking each second) and an animated page, at
  720p30 (and 1080p30 in full mode). The agent's tree is everything: its Python process,
  Playwright's driver, Chromium, Xvfb, ffmpeg (snapshots on, every 5 s, as configured by
  default). The reference: Xvfb + ``chromium --kiosk`` + ffmpeg x11grab → HLS with the same
  x264 settings, constant 30 fps, 1 s segments (the plain pipeline). Runs alternate
  reference, agent, reference, agent…, so load from elsewhere hits both alike; medians.
  Where the CPU goes: the same windows split by process kind.
- glass-to-glass: bench/glass.py (a clock page, decoded from the frames a real hls.js and a
  real Shaka Player show, in headless Chromium, cross-origin), agent at latency low and
  normal, reference; median over the frames of each window, then over runs.
- switch: switch command → first listed segment whose last frame shows the new page.
- start: start → first segment listed, browser warm and cold.
- idle footprint: the real agent (``python -m agent``, connected to a mosquitto started
  here), idle with its browser warm: PSS of the whole tree, RSS of the Python process.

Everything runs locally; nothing is cast. The machine's load shows in every figure: compare
ratios from the same run, not absolute numbers across runs.
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
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from loguru import logger

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import footprint
import glass
import meter
from support.pages import PageServer

from agent.config import Settings
from agent.stream.backend import StreamBackend
from agent.stream.browser import sandbox_enabled
from agent.stream.display import Display
from agent.stream.encoder import EncoderSpec, ffmpeg_args
from agent.stream.hls import MASTER_PLAYLIST, MEDIA_PLAYLIST, master_playlist, read_playlist
from agent.stream.process import ChildProcess
from agent.supervisor.session import StreamRequest
from agent.supervisor.state import EventName
from agent.web.server import WebServer

SNAPSHOT_INTERVAL_S = 5.0
_GOLDEN = 0.618034
_SETTLE_S = 5.0


class Listener:
    def __init__(self) -> None:
        self.stream_url: str | None = None

    def set_stream_url(self, stream_url: str) -> None:
        self.stream_url = stream_url

    def set_title(self, title: str | None) -> None:
        pass

    def set_player(self, *, player_state: str | None, device: str | None) -> None:
        pass

    def set_waiting(self, reason: str | None) -> None:
        pass

    def event(self, name: EventName, **data: Any) -> None:
        logger.warning("unexpected event during the benchmark: {} {}", name, data)

    def ended(self, error: Any, reason: str) -> None:
        logger.error("session ended during the benchmark: {} {}", error, reason)


class NoDevice:
    async def resolve(self, spec: str | None) -> None:
        return None


@dataclass
class Options:
    runs: int
    seconds: float
    qualities: tuple[str, ...]
    latency_seconds: float
    work_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="pc-bench-")))


# -- the agent -------------------------------------------------------------------------------


def settings(work_dir: Path, *, keep_warm: bool = True, **stream: Any) -> Settings:
    return Settings(
        node_id="bench",
        stream={
            "http_port": 0,
            "http_host": "127.0.0.1",
            "public_host": "127.0.0.1",
            "work_dir": str(work_dir),
            **stream,
        },
        browser={"keep_warm": keep_warm},
        snapshot={"enabled": True, "interval": SNAPSHOT_INTERVAL_S},
        cast={"device": "none"},
        homeassistant={"enabled": False},
    )


@contextlib.asynccontextmanager
async def agent_stream(
    work_dir: Path, url: str, quality: str, *, keep_warm: bool = True, **stream: Any
) -> AsyncIterator[tuple[StreamBackend, Any, str]]:
    """A backend streaming ``url``: (backend, session, master playlist URL)."""
    config = settings(work_dir, keep_warm=keep_warm, **stream)
    async with StreamBackend(config, NoDevice()) as backend:  # type: ignore[arg-type]
        if keep_warm:
            await wait_warm(backend)
        listener = Listener()
        session = backend.create_session("bench", StreamRequest(url=url, quality=quality), listener)
        await session.start()
        try:
            assert listener.stream_url is not None
            yield backend, session, listener.stream_url
        finally:
            await session.stop()


async def wait_warm(backend: StreamBackend) -> None:
    """Like an agent that ran a while: the browser up, its start-up work done."""
    while backend.screens.current is None or not backend.screens.current.alive:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    await asyncio.sleep(1.0)


async def timed_start(work_dir: Path, url: str, *, keep_warm: bool) -> float:
    async with StreamBackend(settings(work_dir, keep_warm=keep_warm), NoDevice()) as backend:  # type: ignore[arg-type]
        if keep_warm:
            await wait_warm(backend)
        session = backend.create_session(
            "bench", StreamRequest(url=url, quality="720p"), Listener()
        )
        started = time.perf_counter()
        await session.start()  # returns when the first segment is listed
        elapsed = time.perf_counter() - started
        await session.stop()
        return elapsed


# -- the reference ---------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def reference_stream(work_dir: Path, url: str, quality: str) -> AsyncIterator[str]:
    """Xvfb + chromium --kiosk + plain ffmpeg (same x264 settings), served over HTTP."""
    base = Settings()
    preset = base.qualities[quality]
    display = Display(preset.width, preset.height)
    await display.start()
    profile = tempfile.mkdtemp(prefix="ref-profile-", dir=work_dir)
    out = Path(tempfile.mkdtemp(prefix="ref-hls-", dir=work_dir))
    web = WebServer("127.0.0.1", 0)
    processes: list[ChildProcess] = []
    try:
        argv = [
            str(base.browser.executable), "--kiosk",
            f"--window-size={preset.width},{preset.height}", "--window-position=0,0",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            f"--user-data-dir={profile}",
            *([] if sandbox_enabled(base.browser) else ["--no-sandbox"]), url,
        ]  # fmt: skip
        env = [f"DISPLAY={display.name}"]
        processes.append(await ChildProcess.spawn("reference-chromium", ["env", *env, *argv]))
        await asyncio.sleep(2)  # Chromium up and the page loaded
        spec = EncoderSpec(
            display.name, preset.width, preset.height, preset.fps, preset.bitrate_kbps,
            1.0, 6, None, dedupe=False,
        )  # fmt: skip
        (out / MASTER_PLAYLIST).write_text(
            master_playlist(preset.width, preset.height, preset.bitrate_kbps, None)
        )
        ffmpeg = ffmpeg_args(spec, out, append=False, tuned=False)
        processes.append(await ChildProcess.spawn("reference-ffmpeg", ffmpeg))
        await wait_for_segment(out)
        await web.start()
        web.publish("ref", out)
        yield f"http://127.0.0.1:{web.port}/stream/ref/{MASTER_PLAYLIST}"
    finally:
        await web.stop()
        for process in reversed(processes):
            await process.stop()
        await display.stop()


async def wait_for_segment(directory: Path) -> None:
    async with asyncio.timeout(20):
        while True:
            playlist = await asyncio.to_thread(read_playlist, directory)
            if playlist is not None and playlist.segments:
                return
            await asyncio.sleep(0.05)


# -- CPU -------------------------------------------------------------------------------------


@dataclass
class CpuRun:
    total: float
    kinds: dict[str, float]


async def tree_cpu(seconds: float, *, include_self: bool) -> CpuRun:
    """CPU per second of this process's children (and itself) over ``seconds``."""
    me = os.getpid()
    pids = [me, *meter.descendants(me)] if include_self else meter.descendants(me)
    kinds_before = meter.by_name(pids)
    with meter.metered(pids) as cpu:
        started = time.monotonic()
        await asyncio.sleep(seconds)
        used = cpu.seconds()
        elapsed = time.monotonic() - started
    kinds_after = meter.by_name(pids)
    kinds = {k: (v - kinds_before.get(k, 0.0)) / elapsed for k, v in kinds_after.items()}
    return CpuRun(used / elapsed, kinds)


async def agent_cpu(options: Options, url: str, quality: str) -> CpuRun:
    async with agent_stream(options.work_dir, url, quality):
        await asyncio.sleep(_SETTLE_S)  # past the page's start-up work
        return await tree_cpu(options.seconds, include_self=True)


async def reference_cpu(options: Options, url: str, quality: str) -> CpuRun:
    async with reference_stream(options.work_dir, url, quality):
        await asyncio.sleep(_SETTLE_S)  # also past Chromium's own start-up work
        return await tree_cpu(options.seconds, include_self=False)


async def cpu_rows(options: Options, pages: PageServer) -> list[tuple[str, str, str, str]]:
    rows = []
    for quality in options.qualities:
        for page, target in (("dashboard", "≤ 0.35x"), ("animated", "≤ 0.8x")):
            url = pages.url(f"/{page}")
            ours: list[CpuRun] = []
            ref: list[CpuRun] = []
            for _ in range(options.runs):  # interleaved
                ref.append(await reference_cpu(options, url, quality))
                ours.append(await agent_cpu(options, url, quality))
            a = statistics.median(r.total for r in ours)
            r = statistics.median(r.total for r in ref)
            rows.append(
                (
                    f"CPU {page} {quality} (cpu-s/s)",
                    f"{a:.3f}",
                    f"{r:.3f}",
                    f"{a / r:.2f}x {target}",
                )
            )
            rows.append((f"  where: {page} {quality}", _kinds(ours), _kinds(ref), ""))
    return rows


def _kinds(runs: list[CpuRun]) -> str:
    names = sorted({k for run in runs for k in run.kinds})
    parts = [f"{k} {statistics.median(run.kinds.get(k, 0.0) for run in runs):.3f}" for k in names]
    return ", ".join(parts)


# -- latency ---------------------------------------------------------------------------------


async def latency_rows(options: Options) -> list[tuple[str, str, str, str]]:
    glass.ensure_players()
    executable = str(Settings().browser.executable)
    results: dict[str, dict[str, list[glass.Latency]]] = {}
    async with glass.served_pages() as (clock, origin), glass.viewer(executable) as browser:

        async def run(label: str, stream: contextlib.AbstractAsyncContextManager[Any]) -> None:
            async with stream as running:
                url = running if isinstance(running, str) else running[2]
                measured = await glass.measure_players(
                    browser, origin, url, warmup=6, seconds=options.latency_seconds
                )
            for player, latency in measured.items():
                results.setdefault(label, {}).setdefault(player, []).append(latency)

        for _ in range(options.runs):  # interleaved
            await run("reference", reference_stream(options.work_dir, clock, "720p"))
            for latency in ("low", "normal"):
                stream = agent_stream(options.work_dir, clock, "720p", latency=latency)
                await run(latency, stream)
    rows = []
    targets = {"shaka": "≤ 2.0 s", "hls.js": "≤ 2.5 s"}
    for player in glass.PLAYERS:
        ref = _latency_cell(results["reference"][player])
        for latency in ("low", "normal"):
            rows.append(
                (
                    f"glass-to-glass {player}, latency {latency}",
                    _latency_cell(results[latency][player]),
                    ref,
                    targets[player] if latency == "low" else "",
                )
            )
    return rows


def _latency_cell(runs: list[glass.Latency]) -> str:
    medians = [r.median_s for r in runs if r.median_s is not None]
    stalls = sum(r.stalls for r in runs)
    if not medians:
        return runs[0].cell()
    text = f"{statistics.median(medians):.2f} s"
    behind = [r.behind_edge_s for r in runs if r.behind_edge_s is not None]
    if behind:
        text += f" (player {statistics.median(behind):.2f} behind edge)"
    return text + (f" ({stalls} stalls)" if stalls else "")


async def soak_rows(
    options: Options, seconds: float, latency: str
) -> list[tuple[str, str, str, str]]:
    """Both players on one agent stream at ``latency`` for ``seconds``: stalls and latency."""
    glass.ensure_players()
    executable = str(Settings().browser.executable)
    async with (
        glass.served_pages() as (clock, origin),
        glass.viewer(executable) as browser,
        agent_stream(options.work_dir, clock, "720p", latency=latency) as (_, _, url),
    ):
        measured = await glass.measure_players(browser, origin, url, warmup=6, seconds=seconds)
    return [
        (f"soak {seconds:g} s, {player}, latency {latency}", result.cell(), "-", "no stalls")
        for player, result in measured.items()
    ]


# -- switch ----------------------------------------------------------------------------------


async def switch_latencies(options: Options, pages: PageServer, count: int) -> list[float]:
    colours = [("ff0000", (255, 0, 0)), ("0000ff", (0, 0, 255))]
    latencies = []
    async with (
        agent_stream(options.work_dir, pages.color("00ff00"), "720p") as (_, session, url),
        aiohttp.ClientSession() as http,
    ):
        media_url = url.replace(MASTER_PLAYLIST, MEDIA_PLAYLIST)
        segment = settings(options.work_dir).stream.segment_length_s
        for run in range(count):
            # The playlist answer comes as a segment is listed (the server holds it until
            # then), so a fixed wait after it would land every switch at the same point of a
            # segment. Golden-ratio steps spread them evenly over the segment. Segments
            # listed during the wait show the old page: first_showing checks and skips them.
            known = await listed_segments(http, media_url)
            await asyncio.sleep(1.0 + (run * _GOLDEN % 1.0) * segment)
            rgb_hex, rgb = colours[run % 2]
            started = time.perf_counter()
            await session.switch(f"bench-{run}", StreamRequest(pages.color(rgb_hex), "720p"))
            latencies.append(await first_showing(http, media_url, known, rgb) - started)
    return latencies


async def listed_segments(http: aiohttp.ClientSession, media_url: str) -> list[str]:
    async with http.get(media_url) as response:
        text = await response.text()
    return [line for line in text.splitlines() if line and not line.startswith("#")]


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


async def first_showing(
    http: aiohttp.ClientSession, media_url: str, known: list[str], rgb: tuple[int, int, int]
) -> float:
    """When the first new segment whose last picture shows ``rgb`` was listed.

    The playlist is polled without pause while segments are decoded beside it: a poll that
    waited for a decode would start late, be held by the server until the next listing, and
    date the segment it finds a whole segment late.
    """
    seen = set(known)
    checks: list[tuple[float, asyncio.Task[tuple[int, int, int]]]] = []
    base = media_url.rsplit("/", 1)[0] + "/"
    try:
        while True:
            for name in await listed_segments(http, media_url):
                if name not in seen:
                    seen.add(name)
                    check = asyncio.create_task(last_frame_rgb(http, base + name))
                    checks.append((time.perf_counter(), check))
            while checks and checks[0][1].done():
                at, check = checks.pop(0)
                if all(abs(a - b) < 40 for a, b in zip(check.result(), rgb, strict=True)):
                    return at
            await asyncio.sleep(0.02)
    finally:
        for _, check in checks:
            check.cancel()


# -- report ----------------------------------------------------------------------------------


async def speed_rows(options: Options, pages: PageServer) -> list[tuple[str, str, str, str]]:
    dashboard = pages.url("/dashboard")
    switches = await switch_latencies(options, pages, max(6, options.runs * 3))
    warm = [await timed_start(options.work_dir, dashboard, keep_warm=True) for _ in range(3)]
    cold = [await timed_start(options.work_dir, dashboard, keep_warm=False) for _ in range(3)]
    return [
        (
            "switch: median / worst (s)",
            f"{statistics.median(switches):.2f} / {max(switches):.2f}",
            "-",
            "≤ 0.5 / ≤ 0.8",
        ),
        ("warm start (s)", f"{statistics.median(warm):.2f}", "-", "≤ 1.3"),
        ("cold start (s)", f"{statistics.median(cold):.2f}", "-", ""),
    ]


def print_table(title: str, rows: list[tuple[str, str, str, str]]) -> None:
    header = ("figure", "pagecast", "reference (same run)", "ratio / target")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(4)]
    print(f"\n{title}")
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def parse_args() -> tuple[Options, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 runs, 8 s windows, 720p only")
    parser.add_argument("--runs", type=int, help="interleaved runs per figure (median)")
    parser.add_argument("--seconds", type=float, help="CPU window")
    parser.add_argument("--only", choices=["cpu", "latency", "speed", "footprint"], nargs="*")
    parser.add_argument("--soak", type=float, help="also play N s in both players (stalls)")
    parser.add_argument(
        "--soak-latency", choices=["low", "normal"], default="low", help="the soak's setting"
    )
    args = parser.parse_args()
    runs = args.runs or (2 if args.quick else 5)
    seconds = args.seconds or (8.0 if args.quick else 15.0)
    qualities = ("720p",) if args.quick else ("720p", "1080p")
    return Options(runs, seconds, qualities, 10.0 if args.quick else 20.0), args


def prefer_measured() -> str:
    """Run the measured trees before other work on a shared machine: a starved reference
    ffmpeg does less work than it would alone, and the ratios would flatter it."""
    try:
        os.nice(-15)
    except PermissionError:
        return "normal priority (not allowed to raise it)"
    return f"priority nice {os.nice(0)} (ahead of other work on the machine)"


async def main() -> None:
    options, args = parse_args()
    priority = prefer_measured()
    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    only = set(args.only or ["cpu", "latency", "speed", "footprint"])
    command = " ".join(["bench/pipeline.py", *sys.argv[1:]])
    print(f"pagecast pipeline benchmark: .venv/bin/python {command}")
    print(
        f"median of {options.runs} interleaved runs, CPU windows {options.seconds:g} s, "
        f"CPU measured by {meter.CpuMeter([]).method}, load average at start "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs, {priority}"
    )
    rows: list[tuple[str, str, str, str]] = []
    with PageServer() as pages:
        if "cpu" in only:
            rows += await cpu_rows(options, pages)
        if "latency" in only:
            rows += await latency_rows(options)
        if "speed" in only:
            rows += await speed_rows(options, pages)
    if args.soak:
        rows += await soak_rows(options, args.soak, args.soak_latency)
    if "footprint" in only:
        rows += await footprint.rows(options.work_dir)
    print_table("results", rows)
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    asyncio.run(main())
