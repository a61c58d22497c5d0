"""How one session's stream is reachable: its unguessable HTTP path and its snapshots."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from pathlib import Path

from agent.stream.address import stream_host
from agent.stream.encoder import SNAPSHOT_FILE
from agent.stream.hls import MASTER_PLAYLIST
from agent.web.server import WebServer


class Publication:
    """The stream's files under ``/stream/<token>/`` while the session runs."""

    def __init__(
        self,
        web: WebServer,
        work_dir: Path,
        public_host: str | None,
        segment_s: float,
        on_snapshot: Callable[[bytes | None], None],
    ) -> None:
        self._web = web
        self._segment_s = segment_s
        self._public_host = public_host
        self._on_snapshot = on_snapshot
        self._token = secrets.token_urlsafe(18)
        self.directory = work_dir / f"session-{self._token[:8]}"
        self._snapshot_mtime: float | None = None

    @property
    def path(self) -> str:
        return f"/stream/{self._token}/{MASTER_PLAYLIST}"

    async def url(self, device_host: str | None) -> str:
        """The master playlist's URL as ``device_host`` can reach it."""
        # In a thread: for a device given by host name, choosing the address resolves it.
        host = await asyncio.to_thread(stream_host, self._public_host, device_host)
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"http://{host}:{self._web.port}{self.path}"

    def publish(self) -> None:
        self._web.publish(self._token, self.directory, segment_s=self._segment_s)

    def unpublish(self) -> None:
        self._web.unpublish(self._token)
        self._on_snapshot(None)

    async def check_snapshot(self) -> None:
        """Hand on the encoder's snapshot file when it changed since the last look."""
        found = await asyncio.to_thread(
            _read_if_changed, self.directory / SNAPSHOT_FILE, self._snapshot_mtime
        )
        if found is not None:
            self._snapshot_mtime, data = found
            self._on_snapshot(data)


def _read_if_changed(path: Path, known_mtime: float | None) -> tuple[float, bytes] | None:
    """(mtime, content) of ``path`` unless it is missing or still at ``known_mtime``."""
    try:
        mtime = path.stat().st_mtime
        if mtime == known_mtime:
            return None
        return mtime, path.read_bytes()
    except FileNotFoundError:
        return None
