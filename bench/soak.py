"""Soak: weeks of a wall display compressed into minutes of scheduled faults.

    .venv/bin/python bench/soak.py [--minutes 30] [--every 45] [--quality 720p]

A real agent process (``python -m agent run``) streams an animated page to the fake Cast
device (real Cast v2 over TLS; its player pulls and probes every segment) through a real
mosquitto. Every ``--every`` seconds one fault strikes, in turn: the page's renderer, ffmpeg
or Xvfb killed, ffmpeg stopped for 8 s, the broker restarted, the device rebooted, a
300-command burst. The table says how long each took to be back on screen, whether the
player stalled, how the process tree's memory and descriptors moved, whether the playlist
ever went backwards, and whether anything outlived the agent.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import itertools
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import aiohttp
import aiomqtt
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from fakecast import FakeCastDevice  # noqa: E402
from fakecast.player import StallPolicy  # noqa: E402
from support.mqtt import Mosquitto  # noqa: E402
from support.pages import PageServer  # noqa: E402
from tree import ProcessTree  # noqa: E402

from agent.config import Settings  # noqa: E402

RECOVERY_LIMIT_S = 60.0  # a fault not recovered by then counts as not recovered
NEW_SEGMENTS = 2  # fetched by the player after a fault: it really plays again
WARM_UP_S = 60.0
SAMPLE_EVERY_S = 10.0
SEGMENT_S = 1.0


# -- what the agent says on MQTT (a client that survives the broker restart) ---------------


@dataclass
class Observer:
    port: int
    root: str
    status: dict[str, Any] = field(default_factory=dict)
    events: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    online_at: list[float] = field(default_factory=list)
    client: aiomqtt.Client | None = None
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    online: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        while True:
            with contextlib.suppress(aiomqtt.MqttError):
                async with aiomqtt.Client("127.0.0.1", self.port) as client:
                    self.client = client
                    await client.subscribe(f"{self.root}/#", qos=1)
                    self.connected.set()
                    async for message in client.messages:
                        payload = message.payload if isinstance(message.payload, bytes) else b""
                        self._record(message.topic.value, payload)
            self.connected.clear()
            self.client = None
            await asyncio.sleep(0.2)

    def _record(self, topic: str, payload: bytes) -> None:
        name = topic.removeprefix(self.root + "/")
        if name == "availability" and payload == b"online":
            self.online_at.append(time.monotonic())
            self.online.set()
        elif name in ("status", "event") and payload:
            data = json.loads(payload)
            if name == "status":
                self.status = data
            else:
                self.events.append((time.monotonic(), data))

    async def publish(self, command: str, payload: dict[str, Any]) -> None:
        async with asyncio.timeout(RECOVERY_LIMIT_S):
            await self.connected.wait()
        assert self.client is not None
        await self.client.publish(f"{self.root}/cmd/{command}", json.dumps(payload), qos=1)


# -- the rig -------------------------------------------------------------------------------


@dataclass
class Rig:
    broker: Mosquitto
    tv: FakeCastDevice
    pages: PageServer
    observer: Observer
    agent: subprocess.Popen[bytes]
    tree: ProcessTree
    url: str
    quality: str

    def streaming_our_page(self) -> bool:
        status = self.observer.status
        return (
            status.get("state") == "streaming"
            and status.get("url") == self.url
            and self.tv.player_state == "PLAYING"
        )

    def segments_fetched_since(self, since: float) -> int:
        return len({f.sequence for f in self.tv.log.segment_fetches(since)})

    async def back_on_screen(self, since: float) -> float | None:
        """Seconds from ``since`` until our page plays again with fresh segments; None if not
        within RECOVERY_LIMIT_S."""
        deadline = since + RECOVERY_LIMIT_S
        while time.monotonic() < deadline:
            if self.streaming_our_page() and self.segments_fetched_since(since) >= NEW_SEGMENTS:
                fetches = self.tv.log.segment_fetches(since)
                return fetches[NEW_SEGMENTS - 1].at - since
            await asyncio.sleep(0.1)
        return None

    def kill(self, prefix: str, sig: signal.Signals, match: str = "") -> list[int]:
        victims = [p for p in self.tree.processes() if p.name.startswith(prefix)]
        victims = [p for p in victims if match in p.cmdline]
        for victim in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim.pid, sig)
        return [v.pid for v in victims]


def agent_config(directory: Path, broker: Mosquitto, tv: FakeCastDevice, node: str) -> Path:
    config: dict[str, Any] = {
        "node_id": node,
        "mqtt": {"host": "127.0.0.1", "port": broker.port, "heartbeat_interval": 10},
        "cast": {"device": tv.host, "mdns": False, "connect_timeout": 3},
        "stream": {"http_port": 0, "segment_seconds": SEGMENT_S},
        "homeassistant": {"enabled": False},
        "snapshot": {"interval": 5.0},
        "log": {"level": "INFO"},
    }
    optional = {
        # Keys of later features: set only where this agent has them.
        "state_dir": str(directory / "state"),
        "browser": {"recycle_after_h": 0.1},
    }
    for key, value in optional.items():
        if key in Settings.model_fields and (
            not isinstance(value, dict) or set(value) <= set(_section_fields(key))
        ):
            config[key] = value
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _section_fields(key: str) -> set[str]:
    annotation = Settings.model_fields[key].annotation
    return set(getattr(annotation, "model_fields", {}))


# -- faults --------------------------------------------------------------------------------


async def kill_renderer(rig: Rig) -> str:
    pids = rig.kill("chrom", signal.SIGKILL, "--type=renderer")
    return f"{len(pids)} renderer(s)"


async def kill_ffmpeg(rig: Rig) -> str:
    return f"pid {rig.kill('ffmpeg', signal.SIGKILL)}"


async def kill_xvfb(rig: Rig) -> str:
    return f"pid {rig.kill('Xvfb', signal.SIGKILL)}"


async def stop_ffmpeg(rig: Rig) -> str:
    pids = rig.kill("ffmpeg", signal.SIGSTOP)
    await asyncio.sleep(8)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
    return "stopped 8 s"


async def restart_broker(rig: Rig) -> str:
    rig.broker.kill()
    await asyncio.sleep(2)
    rig.broker.start()
    return "down 2 s"


async def reboot_device(rig: Rig) -> str:
    await rig.tv.reboot(5)
    return "down 5 s"


async def command_burst(rig: Rig) -> str:
    pages = [rig.pages.color("ff0000"), rig.pages.color("0000ff")]
    for i in range(300):
        payload = {"url": pages[i % 2], "quality": rig.quality, "id": uuid.uuid4().hex}
        await rig.observer.publish("start", payload)
    await rig.observer.publish("start", {"url": rig.url, "quality": rig.quality})
    return "300 starts, then the page again"


Fault = Callable[[Rig], Awaitable[str]]
FAULTS: list[tuple[str, Fault]] = [
    ("renderer killed", kill_renderer),
    ("ffmpeg killed", kill_ffmpeg),
    ("Xvfb killed", kill_xvfb),
    ("ffmpeg stopped 8 s", stop_ffmpeg),
    ("broker restarted", restart_broker),
    ("device rebooted", reboot_device),
    ("300-command burst", command_burst),
]


@dataclass
class Outcome:
    name: str
    at_s: float
    detail: str
    recovered_s: float | None


async def strike(rig: Rig, name: str, fault: Fault, began: float) -> Outcome:
    struck = time.monotonic()
    detail = await fault(rig)
    if name == "broker restarted":
        # The stream never stopped; what counts is the agent being back on the broker.
        recovered = await _back_online(rig, struck)
    else:
        recovered = await rig.back_on_screen(struck)
    return Outcome(name, struck - began, detail, recovered)


async def _back_online(rig: Rig, since: float) -> float | None:
    deadline = since + RECOVERY_LIMIT_S
    while time.monotonic() < deadline:
        later = [t for t in rig.observer.online_at if t > since]
        if later and rig.streaming_our_page():
            return later[0] - since
        await asyncio.sleep(0.1)
    return None


# -- watching the playlist and the tree ----------------------------------------------------


@dataclass
class Samples:
    rss: list[tuple[float, float]] = field(default_factory=list)  # (hours, MB)
    pss: list[tuple[float, float]] = field(default_factory=list)
    fds: list[tuple[float, int]] = field(default_factory=list)
    processes: list[int] = field(default_factory=list)


async def sample(tree: ProcessTree, samples: Samples, began: float) -> None:
    while True:
        usage = await asyncio.to_thread(tree.usage)
        hours = (time.monotonic() - began) / 3600
        samples.rss.append((hours, usage.rss_mb))
        samples.pss.append((hours, usage.pss_mb))
        samples.fds.append((hours, usage.fds))
        samples.processes.append(usage.processes)
        await asyncio.sleep(SAMPLE_EVERY_S)


def sequence_went_backwards(rig: Rig) -> int:
    """How often the device saw a playlist whose media sequence was lower than before."""
    count = 0
    highest = -1
    for fetch in rig.tv.log.fetches:
        if fetch.kind == "playlist" and fetch.ok and fetch.sequence is not None:
            if fetch.sequence < highest:
                count += 1
            highest = max(highest, fetch.sequence)
    return count


def stalls(rig: Rig, longer_than_s: float) -> list[float]:
    """Gaps between two segments the player fetched, longer than ``longer_than_s``."""
    times = [f.at for f in rig.tv.log.segment_fetches()]
    return [b - a for a, b in itertools.pairwise(times) if b - a > longer_than_s]


async def watch_playlist(rig: Rig, sequences: list[int]) -> None:
    """The media playlist's EXT-X-MEDIA-SEQUENCE as an outside player polls it."""
    async with aiohttp.ClientSession() as http:
        while True:
            await asyncio.sleep(0.5)
            stream_url = rig.observer.status.get("stream_url")
            if not stream_url:
                continue
            media_url = stream_url.rsplit("/", 1)[0] + "/media.m3u8"
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
                async with http.get(media_url, timeout=aiohttp.ClientTimeout(total=3)) as reply:
                    text = await reply.text()
                for line in text.splitlines():
                    if line.startswith("#EXT-X-MEDIA-SEQUENCE:"):
                        sequences.append(int(line.split(":", 1)[1]))


def backwards(sequences: list[int]) -> int:
    return sum(1 for a, b in itertools.pairwise(sequences) if b < a)


def slope_per_hour(points: list[tuple[float, float]]) -> float:
    if len(points) < 3:
        return 0.0
    return statistics.linear_regression([h for h, _ in points], [v for _, v in points]).slope


# -- the run -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    minutes: float
    every_s: float
    quality: str
    agent_log: Path


@dataclass
class Results:
    samples: Samples = field(default_factory=Samples)
    sequences: list[int] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    stopped: Stopped | None = None


async def soak(options: Options) -> list[str]:
    with tempfile.TemporaryDirectory(prefix="pagecast-soak-") as tmp:
        directory = Path(tmp)
        broker = Mosquitto(directory)
        broker.start()
        tree = ProcessTree("pagecast-soak")
        try:
            with PageServer() as pages:
                async with FakeCastDevice("Soak TV", stall=StallPolicy(4, 12)) as tv:
                    node = f"soak-{uuid.uuid4().hex[:6]}"
                    config = agent_config(directory, broker, tv, node)
                    with options.agent_log.open("wb") as log:
                        agent = spawn_agent(config, tree, log)
                        observer = Observer(broker.port, f"pagecast/{node}")
                        url = pages.url("/animated")
                        rig = Rig(broker, tv, pages, observer, agent, tree, url, options.quality)
                        results = await run(rig, options)
                    return report(rig, results, options)
        finally:
            broker.stop()
            tree.close()


def spawn_agent(config: Path, tree: ProcessTree, log: IO[bytes]) -> subprocess.Popen[bytes]:
    agent = subprocess.Popen(
        [sys.executable, "-m", "agent", "run", "--config", str(config)],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=lambda: _agent_preexec(tree),  # noqa: PLW1509 (no locks taken)
    )
    tree.root_pid = agent.pid
    return agent


_LIBC = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1


def _agent_preexec(tree: ProcessTree) -> None:
    tree.preexec()
    # An interrupted soak takes its agent along instead of leaving it streaming.
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


async def run(rig: Rig, options: Options) -> Results:
    results = Results()
    async with asyncio.TaskGroup() as group:
        watching = group.create_task(rig.observer.run())
        await rig.observer.online.wait()  # the agent listens to commands once it says online
        began = time.monotonic()
        await rig.observer.publish("start", {"url": rig.url, "quality": options.quality})
        first = await rig.back_on_screen(began)
        print(f"# on screen after {first} s; warming up {WARM_UP_S:g} s", flush=True)
        background = [
            group.create_task(sample(rig.tree, results.samples, time.monotonic())),
            group.create_task(watch_playlist(rig, results.sequences)),
        ]
        await asyncio.sleep(WARM_UP_S)
        seconds = options.minutes * 60 - WARM_UP_S
        results.outcomes = await run_schedule(rig, seconds, options.every_s, began)
        results.stopped = await stop_agent(rig)
        for task in (watching, *background):
            task.cancel()
    return results


async def run_schedule(rig: Rig, seconds: float, every_s: float, began: float) -> list[Outcome]:
    outcomes: list[Outcome] = []
    end = time.monotonic() + seconds
    index = 0
    while time.monotonic() + every_s <= end:
        name, fault = FAULTS[index % len(FAULTS)]
        struck = time.monotonic()
        outcome = await strike(rig, name, fault, began)
        outcomes.append(outcome)
        print(f"# {outcome.at_s:7.0f} s  {name:<20} {outcome.recovered_s}", flush=True)
        index += 1
        await asyncio.sleep(max(0.0, struck + every_s - time.monotonic()))
    return outcomes


@dataclass
class Stopped:
    exit_code: int | None
    stop_s: float
    left: list[str]


async def stop_agent(rig: Rig) -> Stopped:
    began = time.monotonic()
    rig.agent.send_signal(signal.SIGTERM)
    try:
        code: int | None = await asyncio.to_thread(rig.agent.wait, 15)
    except subprocess.TimeoutExpired:
        code = None
        rig.agent.kill()
    stop_s = time.monotonic() - began
    await asyncio.sleep(2)  # what outlives the agent by more than this is an orphan
    left = [f"{p.pid} {p.name}" for p in rig.tree.processes()]
    for proc in rig.tree.processes():
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
    return Stopped(code, stop_s, left)


def report(rig: Rig, results: Results, options: Options) -> list[str]:
    lines = [
        f"soak: {options.minutes:g} min, {options.quality}, animated page, "
        f"segments {SEGMENT_S:g} s, fault every {options.every_s:g} s, "
        f"tree by {'cgroup' if rig.tree.by_cgroup else '/proc descendants'}",
        "",
        "| fault | at (s) | back on screen (s) |",
        "|---|---|---|",
    ]
    for outcome in results.outcomes:
        recovered = f"{outcome.recovered_s:.1f}" if outcome.recovered_s is not None else "NOT"
        lines.append(f"| {outcome.name} ({outcome.detail}) | {outcome.at_s:.0f} | {recovered} |")
    return [*lines, "", *summary(rig, results)]


def summary(rig: Rig, results: Results) -> list[str]:
    samples, stopped = results.samples, results.stopped
    assert stopped is not None
    times = [o.recovered_s for o in results.outcomes if o.recovered_s is not None]
    within = sum(1 for t in times if t <= 10)
    gaps = stalls(rig, 3 * SEGMENT_S)
    rss0, rss1 = samples.rss[0][1], samples.rss[-1][1]
    pss0, pss1 = samples.pss[0][1], samples.pss[-1][1]
    return [
        "| figure | value |",
        "|---|---|",
        f"| faults recovered within 10 s | {within}/{len(results.outcomes)} |",
        f"| recovery median / worst | {_median(times)} / {max(times, default=0):.1f} s |",
        f"| player gaps > {3 * SEGMENT_S:g} s between segments | {len(gaps)} "
        f"(longest {max(gaps, default=0):.1f} s) |",
        f"| player problems (failed fetches) | {len(rig.tv.log.problems())} |",
        f"| media sequence went backwards | {backwards(results.sequences)} "
        f"of {len(results.sequences)} polls |",
        f"| tree RSS start → end | {rss0:.0f} → {rss1:.0f} MB "
        f"({(rss1 - rss0) / rss0 * 100:+.1f} %), slope {slope_per_hour(samples.rss):+.0f} MB/h |",
        f"| tree PSS start → end | {pss0:.0f} → {pss1:.0f} MB "
        f"({(pss1 - pss0) / pss0 * 100:+.1f} %), slope {slope_per_hour(samples.pss):+.0f} MB/h |",
        f"| fds start → end | {samples.fds[0][1]} → {samples.fds[-1][1]} |",
        f"| processes start → end | {samples.processes[0]} → {samples.processes[-1]} |",
        f"| SIGTERM → exit | {stopped.stop_s:.1f} s, exit code {stopped.exit_code} |",
        f"| left running after exit | {len(stopped.left)} {stopped.left or ''} |",
    ]


def _median(values: list[float]) -> str:
    return f"{statistics.median(values):.1f}" if values else "-"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--every", type=float, default=45.0, help="seconds between faults")
    parser.add_argument("--quality", default="720p")
    parser.add_argument(
        "--agent-log", type=Path, default=Path("/tmp/pagecast-soak-agent.log"), help="kept"
    )
    args = parser.parse_args()
    command = " ".join(["bench/soak.py", *sys.argv[1:]])
    print(f"# {command}", flush=True)
    lines = asyncio.run(soak(Options(args.minutes, args.every, args.quality, args.agent_log)))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
