"""Tells the person at the terminal where to look: health, snapshot and stream URLs.

A first run without a TV must still show that pagecast works; these lines say what to open in
a browser, VLC or ffplay. It only observes the supervisor, like every extension.
"""

from __future__ import annotations

from loguru import logger

from agent.supervisor.state import State
from agent.supervisor.supervisor import Supervisor


class ConsoleGuide:
    def __init__(self, base_url: str, supervisor: Supervisor) -> None:
        self._base_url = base_url.rstrip("/")
        self._supervisor = supervisor

    def announce(self) -> None:
        logger.info(
            "HTTP server ready: health {0}/healthz, snapshot {0}/snapshot.jpg", self._base_url
        )

    async def run(self) -> None:
        shown: str | None = None
        with self._supervisor.status_changes.subscribe() as changes:
            while True:
                status = await changes.get()
                if status.state is not State.STREAMING or status.stream_url is None:
                    shown = None
                    continue
                key = f"{status.session_id} {status.stream_url}"
                if key == shown:
                    continue
                shown = key
                where = f"on {status.device}" if status.device else "without a Cast device"
                logger.info(
                    "streaming {} {}: stream {} (VLC or ffplay play it), snapshot {}/snapshot.jpg",
                    status.url,
                    where,
                    status.stream_url,
                    self._base_url,
                )
