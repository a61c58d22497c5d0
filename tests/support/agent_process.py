"""``python -m agent`` as a separate process, exactly as a user runs it, with a config file.

For what only a real process shows: kill -9 and a restart, signals, the exit status, orphans.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from support.mqtt import free_port
from support.settings import merge

REPO = Path(__file__).resolve().parents[2]
# Small and light: these tests are about the agent's life, not picture quality.
TINY = {"width": 320, "height": 180, "fps": 10, "bitrate_kbps": 300}


@dataclass(frozen=True)
class AgentConfig:
    path: Path
    log: Path
    root: str  # ~ on MQTT
    http_port: int


def write_config(directory: Path, mqtt_port: int, **overrides: Any) -> AgentConfig:
    """A config for the real agent on 127.0.0.1 with no Cast device unless ``cast`` says so."""
    node = f"p-{uuid.uuid4().hex[:8]}"
    http_port = free_port()
    base = {
        "node_id": node,
        "state_dir": str(directory / "state"),
        "mqtt": {"host": "127.0.0.1", "port": mqtt_port},
        "cast": {"device": "none", "mdns": False},
        "stream": {
            "http_host": "127.0.0.1",
            "http_port": http_port,
            "public_host": "127.0.0.1",
            "default_quality": "tiny",
        },
        "qualities": {"tiny": TINY},
        "snapshot": {"enabled": False},
        "homeassistant": {"enabled": False},
    }
    path = directory / f"{node}.yaml"
    path.write_text(yaml.safe_dump(merge(base, overrides)))
    return AgentConfig(path, directory / f"{node}.log", f"pagecast/{node}", http_port)


@contextlib.asynccontextmanager
async def agent_process(config: AgentConfig) -> AsyncIterator[asyncio.subprocess.Process]:
    """The agent running with ``config``; killed at the end if it is still there."""
    with config.log.open("ab") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "agent", "--config", str(config.path),
            stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
        )  # fmt: skip
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
