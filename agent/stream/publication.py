"""How one session's stream is reachable: its unguessable HTTP path and its snapshots."""

from __future__ import annotations

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
        on_snapshot: Callable[[bytes | None], None],
    ) -> None:
        self._web = web
        self._public_host = public_host
        self._on_snapshot = on_snapshot
        self._token = secrets.token_urlsafe(18)
        self.directory = work_dir / f"session-{self._token[:8]}"
        self._snapshot_mtime: float | None = None

    @property
    def path(self) -> str:
        return f"/stream/{self._token}/{MASTER_PLAYLIST}"

    def url(self, device_host: str | None) -> str:
        """The master playlist's URL as ``device_host`` can reach it."""
        host = stream_host(self._public_host, device_host)
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"http://{host}:{self._web.port}{self.path}"

    def publish(self) -> None:
        self._web.publish(self._token, self.directory)

    def unpublish(self) -> None:
        self._web.unpublish(self._token)
        self._on_snapshot(None)

    def check_snapshot(self) -> None:
        """Hand on the encoder's snapshot file when it changed since the last look."""
        path = self.directory / SNAPSHOT_FILE
        try:
            mtime = path.stat().st_mtime
            if mtime == self._snapshot_mtime:
                return
            data = path.read_bytes()
        except FileNotFoundError:
            return
        self._snapshot_mtime = mtime
        self._on_snapshot(data)
