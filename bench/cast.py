"""Casting latencies against the fake Cast device (real pychromecast, real TLS, a receiver that
pulls a live HLS stream): how long each step takes and how fast the agent heals.

    .venv/bin/python bench/cast.py [--runs 5]

Device-side numbers on a real TV add its own launch and buffering time (seconds); these are
the agent's share.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path.insert(0, str(TESTS))

from fakecast import FakeCastDevice, LiveHlsServer, make_hls_segments  # noqa: E402
from support.listener import RecordingListener  # noqa: E402

from agent.cast.manager import ChromecastManager  # noqa: E402
from agent.config import CastSettings, LogSettings  # noqa: E402
from agent.logs import setup_logging  # noqa: E402
from agent.stream.casting import Casting, Parking  # noqa: E402
from agent.supervisor.state import EventName  # noqa: E402

Step = Callable[[FakeCastDevice, LiveHlsServer], Awaitable[float]]


def _settings(tv: FakeCastDevice, **overrides: object) -> CastSettings:
    values: dict[str, object] = {
        "device": tv.host,
        "mdns": False,
        "connect_timeout": 5,
        "resume_after_s": 0,  # the resume row measures our share, not the configured wait
    }
    return CastSettings.model_validate(values | overrides)


async def _nothing() -> None:
    """The pipeline's park/unpark: not part of these figures (see bench/pipeline.py)."""


async def connect_by_address(tv: FakeCastDevice, hls: LiveHlsServer) -> float:
    async with ChromecastManager(_settings(tv)) as manager:
        began = time.perf_counter()
        await manager.resolve(None)
        return time.perf_counter() - began


async def find_by_name(tv: FakeCastDevice, hls: LiveHlsServer) -> float:
    async with ChromecastManager(_settings(tv, device=tv.name, known_hosts=[tv.host])) as manager:
        began = time.perf_counter()
        await manager.resolve(None)
        return time.perf_counter() - began


async def load_to_playing(tv: FakeCastDevice, hls: LiveHlsServer) -> float:
    async with ChromecastManager(_settings(tv)) as manager:
        device = await manager.resolve(None)
        assert device is not None
        began = time.perf_counter()
        await device.show(hls.url, "bench")
        return time.perf_counter() - began


def _recovery(trouble: Callable[[FakeCastDevice], Awaitable[None]]) -> Step:
    async def measure(tv: FakeCastDevice, hls: LiveHlsServer) -> float:
        settings = _settings(tv)
        async with ChromecastManager(settings) as manager:
            device = await manager.resolve(None)
            assert device is not None
            listener = RecordingListener()
            casting = Casting(device, listener, settings, Parking(_nothing, _nothing))
            await casting.show(hls.url, "bench")
            try:
                await trouble(tv)
                began = time.perf_counter()  # the device is back (or never left)
                await listener.wait_until(lambda: listener.named(EventName.RECOVERED), within_s=90)
                return time.perf_counter() - began
            finally:
                await casting.stop(handover=False)

    return measure


async def _reboot_1s(tv: FakeCastDevice) -> None:
    await tv.reboot(1)


async def _reboot_5s(tv: FakeCastDevice) -> None:
    await tv.reboot(5)


def _switched_off(seconds: float) -> Callable[[FakeCastDevice], Awaitable[None]]:
    async def trouble(tv: FakeCastDevice) -> None:
        await tv.go_away()
        await asyncio.sleep(seconds)
        await tv.come_back()

    return trouble


async def _youtube_then_idle(tv: FakeCastDevice) -> None:
    await tv.other_app()
    await asyncio.sleep(2)
    await tv.other_app_ends()


STEPS: list[tuple[str, Step]] = [
    ("connect by address", connect_by_address),
    ("find by name (known_hosts) + connect", find_by_name),
    ("launch + LOAD until PLAYING", load_to_playing),
    ("dropped connection → recovered", _recovery(FakeCastDevice.drop_connections)),
    ("app closed by device → recovered", _recovery(FakeCastDevice.close_app)),
    ("reboot 1 s: back → recovered", _recovery(_reboot_1s)),
    ("reboot 5 s: back → recovered", _recovery(_reboot_5s)),
    ("switched off 30 s: back → recovered", _recovery(_switched_off(30))),
    ("switched off 90 s: back → recovered", _recovery(_switched_off(90))),
    ("YouTube ends: Backdrop → recovered (+resume_after_s)", _recovery(_youtube_then_idle)),
]


async def main(runs: int) -> None:
    setup_logging(LogSettings(level="WARNING"))
    segments = make_hls_segments(Path(tempfile.mkdtemp(prefix="bench-hls-")))
    print(f"{'step':52} {'median s':>9} {'max s':>7}  ({runs} runs)")
    async with LiveHlsServer(segments) as hls:
        for name, step in STEPS:
            times = []
            for _ in range(runs):
                async with FakeCastDevice("Bench TV") as tv:
                    times.append(await step(tv, hls))
            print(f"{name:52} {statistics.median(times):9.3f} {max(times):7.3f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    asyncio.run(main(parser.parse_args().runs))
