"""Idle footprint of the real agent: ``python -m agent`` connected to a local mosquitto,
nothing streaming, its browser warm. PSS of the whole tree, RSS of the Python process.

Measure with nothing else running: PSS shares a library's pages among all processes that map
it, so other Chromiums on the machine make ours look smaller than it is alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import meter

MOSQUITTO = "/usr/sbin/mosquitto"
_REPO = Path(__file__).resolve().parents[1]
_SETTLE_S = 8.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def _process(*argv: str) -> AsyncIterator[asyncio.subprocess.Process]:
    process = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield process
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 15)
            except TimeoutError:
                process.kill()
                await process.wait()


async def idle_agent(work_dir: Path) -> dict[str, float]:
    """PSS per process kind (MB), plus ``python rss`` and ``renderers``."""
    directory = Path(tempfile.mkdtemp(prefix="footprint-", dir=work_dir))
    port = _free_port()
    (directory / "mosquitto.conf").write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\nuser root\n"
    )
    (directory / "config.yaml").write_text(
        f"node_id: footprint\nmqtt: {{host: 127.0.0.1, port: {port}}}\n"
        f"cast: {{device: none}}\nstream: {{http_port: 0, work_dir: {directory}}}\n"
    )
    async with (
        _process(MOSQUITTO, "-c", str(directory / "mosquitto.conf")),
        _process(sys.executable, "-m", "agent", "-c", str(directory / "config.yaml")) as agent,
    ):
        while not any(meter.name(p).startswith("chrom") for p in meter.descendants(agent.pid)):
            if agent.returncode is not None:
                raise RuntimeError("the agent exited")
            await asyncio.sleep(0.2)
        await asyncio.sleep(_SETTLE_S)  # warm: the browser up, start-up work done
        pids = [agent.pid, *meter.descendants(agent.pid)]
        figures: dict[str, float] = {}
        for pid in pids:
            kind = meter.kind(meter.name(pid))
            figures[kind] = figures.get(kind, 0.0) + meter.pss_mb(pid)
        figures["python rss"] = meter.rss_mb(agent.pid)
        figures["renderers"] = sum(1 for p in pids if "--type=renderer" in _cmdline(p))
        return figures


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


# The libraries the agent imports, in the order it needs them; the last entry is the agent.
_IMPORTS = (
    ("asyncio, ssl", "asyncio, ssl"),
    ("loguru, yaml", "loguru, yaml"),
    ("pydantic-settings", "pydantic_settings"),
    ("aiomqtt", "aiomqtt"),
    ("aiohttp", "aiohttp.web"),
    # As the agent imports it: without requests (agent/cast/__init__.py).
    ("pychromecast, zeroconf", "agent.cast"),
    ("playwright", "playwright.async_api"),
    ("the agent's own modules", "agent.app, agent.cli"),
)
_IMPORT_PROBE = """
import importlib, json, sys
def rss():
    with open('/proc/self/status') as status:
        return next(int(l.split()[1]) / 1024 for l in status if l.startswith('VmRSS:'))
figures = [rss()]
for modules in sys.argv[1:]:
    for module in modules.split(', '):
        importlib.import_module(module)
    figures.append(rss())
print(json.dumps(figures))
"""


def import_costs() -> list[float]:
    """RSS (MB) of a bare interpreter, then after each entry of ``_IMPORTS``: what the
    libraries cost before the agent has done anything."""
    argv = [sys.executable, "-c", _IMPORT_PROBE, *(modules for _, modules in _IMPORTS)]
    done = subprocess.run(argv, check=True, capture_output=True, text=True, cwd=_REPO)
    return [float(x) for x in json.loads(done.stdout)]


def import_row() -> tuple[str, str, str, str]:
    runs = [import_costs() for _ in range(3)]
    figures = [statistics.median(step) for step in zip(*runs, strict=True)]
    steps = ", ".join(
        f"{label} +{after - before:.0f}"
        for (label, _), (before, after) in zip(_IMPORTS, itertools.pairwise(figures), strict=True)
    )
    return ("  python RSS after imports only (MB)", f"{figures[-1]:.0f}", "-",
            f"bare {figures[0]:.0f}, {steps}")  # fmt: skip


async def rows(work_dir: Path, runs: int = 2) -> list[tuple[str, str, str, str]]:
    results = [await idle_agent(work_dir) for _ in range(runs)]

    def med(key: str) -> float:
        return statistics.median(r.get(key, 0.0) for r in results)

    kinds = ("python", "node", "chromium", "Xvfb")
    total = statistics.median(sum(r.get(k, 0.0) for k in kinds) for r in results)
    split = ", ".join(f"{k} {med(k):.0f}" for k in kinds)
    others = os.getloadavg()[0]
    return [
        ("idle agent, warm browser: tree PSS (MB)", f"{total:.0f}", "-", "≤ 400"),
        ("  PSS by process kind (MB)", split, "-", f"{med('renderers'):.0f} renderers"),
        ("idle agent: python RSS (MB)", f"{med('python rss'):.0f}", "-", "≤ 60"),
        import_row(),
        ("  (load average while measured)", f"{others:.1f}", "-", "PSS is lower when loaded"),
    ]
