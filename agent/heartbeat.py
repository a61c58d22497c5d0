"""The periodic liveness report on ``~/heartbeat`` and the static ``~/info`` document."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any

from agent import __version__
from agent.commands import COMMANDS
from agent.config import Settings
from agent.proctree import TreeUsage, tree_usage
from agent.supervisor.state import iso, utcnow
from agent.supervisor.supervisor import Supervisor

CORE_CAPABILITIES = (
    *("duration", "auth-profiles", "fleet", "mqtt5-response-topic", "id-replay"),
    *("interrupts", "rotations", "scenes", "volume", "reload"),
)


class Heartbeat:
    """Builds heartbeats; ``seq`` counts up for the life of the process, across reconnects."""

    def __init__(self, supervisor: Supervisor) -> None:
        self._supervisor = supervisor
        self._started = time.monotonic()
        self._seq = 0
        self._tree: TreeUsage | None = None

    async def measure(self) -> None:
        """Read the process tree's memory (in a thread: it walks /proc) for the next payloads.

        The whole tree, Chromium, Xvfb and ffmpeg too: slow growth over days shows there. Not
        part of payload(), so that a (re)connect announces itself without waiting for it.
        """
        self._tree = await asyncio.to_thread(tree_usage)

    def payload(self, *, mqtt_reconnects: int) -> dict[str, Any]:
        tree = self._tree
        self._seq += 1
        state = self._supervisor.status.state
        figures = self._supervisor.figures()
        return {
            "ts": iso(utcnow()),
            "seq": self._seq,
            "uptime_s": round(time.monotonic() - self._started, 1),
            "state": state.value,
            "stream": figures.to_payload() if figures else None,
            "tree_rss_mb": round(tree.rss_bytes / 2**20, 1) if tree else None,
            "processes": tree.processes if tree else None,
            "mqtt_reconnects": mqtt_reconnects,
            "version": __version__,
        }


def info_payload(settings: Settings, extra_capabilities: Iterable[str] = ()) -> dict[str, Any]:
    return {
        "version": __version__,
        "node_id": settings.node_id,
        "commands": list(COMMANDS),
        "qualities": {
            name: preset.model_dump(mode="json") for name, preset in settings.qualities.items()
        },
        "default_quality": settings.stream.default_quality,
        "scenes": sorted(settings.scenes),
        "capabilities": [*CORE_CAPABILITIES, *extra_capabilities],
        "config": settings.public_dict(),
    }
