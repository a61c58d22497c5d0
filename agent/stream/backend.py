"""The long-lived parts of streaming (HTTP server, Playwright, warm screen) and the session
factory the supervisor uses: ``Supervisor(backend.create_session)``."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from types import TracebackType

from loguru import logger
from playwright.async_api import Playwright, async_playwright

from agent.broadcast import Broadcast
from agent.cast.base import CastManager
from agent.config import Settings
from agent.retry import Backoff
from agent.stream import hwaccel
from agent.stream.browser import Geometry
from agent.stream.process import start_owned
from agent.stream.screen import ScreenKeeper
from agent.stream.session import PipelineSession, SessionParts
from agent.supervisor.session import SessionListener, StreamRequest
from agent.web.server import WebServer

# Warming a browser that cannot start is retried this often (seconds, with backoff).
WARM_RETRY_MIN_S = 1.0
WARM_RETRY_MAX_S = 60.0

# Told what keeps the browser from starting (None once it runs): the agent shows it.
FaultReport = Callable[[Exception | None], None]


class StreamBackend:
    """Async context manager. Add HTTP routes via ``backend.web.add_routes`` before entering."""

    def __init__(
        self, settings: Settings, cast: CastManager, *, on_fault: FaultReport | None = None
    ) -> None:
        self._settings = settings
        self._cast = cast
        self._on_fault: FaultReport = on_fault or (lambda _exc: None)
        self.web = WebServer(settings.stream.http_host, settings.stream.http_port)
        self.web.set_snapshot_source(self.latest_snapshot)
        self.snapshots: Broadcast[bytes] = Broadcast()
        self._snapshot: bytes | None = None
        # Everything entered, closed in reverse order however far entering got.
        self._stack = contextlib.AsyncExitStack()
        self._screens: ScreenKeeper | None = None
        self._work_dir: Path | None = None
        self._sessions: weakref.WeakSet[PipelineSession] = weakref.WeakSet()

    @property
    def screens(self) -> ScreenKeeper:
        if self._screens is None:
            raise RuntimeError("StreamBackend not entered")
        return self._screens

    def latest_snapshot(self) -> bytes | None:
        """The newest JPEG of what is on screen; None when nothing streams."""
        return self._snapshot

    def _on_snapshot(self, data: bytes | None) -> None:
        self._snapshot = data
        if data is not None:
            self.snapshots.publish(data)

    async def __aenter__(self) -> StreamBackend:
        try:
            await self._enter()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stack.aclose()

    async def _enter(self) -> None:
        configured = self._settings.stream.work_dir
        if configured is not None:
            await asyncio.to_thread(configured.mkdir, parents=True, exist_ok=True)
        self._work_dir = Path(
            await asyncio.to_thread(tempfile.mkdtemp, prefix="pagecast-", dir=configured)
        )
        self._stack.push_async_callback(asyncio.to_thread, shutil.rmtree, self._work_dir, True)
        await self.web.start()
        self._stack.push_async_callback(self.web.stop)
        playwright = await self._stack.enter_async_context(_playwright())
        self._screens = ScreenKeeper(playwright, self._settings.browser)
        self._stack.push_async_callback(self._screens.close)
        if self._settings.browser.keep_warm:
            geometry = Geometry.of(self._settings.qualities[self._settings.stream.default_quality])
            # In the background: the agent comes online at once; a start waits for the screen.
            warming = asyncio.create_task(self._warm(geometry), name="warm-screen")
            self._stack.push_async_callback(_cancel, warming)
        # Normally the supervisor stopped its session already; nothing may outlive the backend.
        self._stack.push_async_callback(self._stop_sessions)

    async def _warm(self, geometry: Geometry) -> None:
        # The encoder probe (a few one-frame test encodes) overlaps the browser's launch.
        await asyncio.gather(
            hwaccel.chosen(self._settings.stream.encoder), self._warm_screen(geometry)
        )

    async def _warm_screen(self, geometry: Geometry) -> None:
        # A browser that cannot start now may after a fix (a library installed, a flag set):
        # keep trying, and say why meanwhile.
        backoff = Backoff(WARM_RETRY_MIN_S, WARM_RETRY_MAX_S)
        while True:
            try:
                await self.screens.warm(geometry)
            except Exception as exc:
                delay = backoff.next()
                logger.warning("could not warm up the browser (retry in {:.0f} s): {}", delay, exc)
                self._on_fault(exc)
                await asyncio.sleep(delay)
                continue
            self._on_fault(None)
            logger.info("browser warm ({}x{})", geometry.width, geometry.height)
            return

    async def _stop_sessions(self) -> None:
        for session in list(self._sessions):
            await session.stop()

    def create_session(
        self, session_id: str, request: StreamRequest, listener: SessionListener
    ) -> PipelineSession:
        if self._work_dir is None:
            raise RuntimeError("StreamBackend not entered")
        parts = SessionParts(
            settings=self._settings,
            screens=self.screens,
            work_dir=self._work_dir,
            cast=self._cast,
            web=self.web,
            on_snapshot=self._on_snapshot,
        )
        session = PipelineSession(parts, session_id, request, listener)
        self._sessions.add(session)
        return session


@contextlib.asynccontextmanager
async def _playwright() -> AsyncIterator[Playwright]:
    """Playwright's driver for as long as the backend runs; a driver that fails to exit
    cleanly (it is often gone already at shutdown) does not stop the rest of the teardown.

    A cancellation while the driver starts (an agent stopped right after it started) would
    leave the forked driver running with nobody to stop it: Playwright hands over its
    handle only once the start completes. So the start completes, and is undone, first.
    """
    manager = async_playwright()

    async def stop(_playwright: Playwright) -> None:
        await manager.__aexit__(None, None, None)

    with _driver_environment():
        playwright = await start_owned(manager.__aenter__(), stop)
    try:
        yield playwright
    finally:
        with contextlib.suppress(Exception):
            await manager.__aexit__(None, None, None)


# Playwright's driver is a Node process relaying messages, idle most of the time. V8 sizes its
# young generation for throughput (16 MB semi-spaces; 1 MB: -10 MB RSS), and glibc gives each
# of its threads a malloc arena (one arena: node's PSS 104 -> 101 MB in the footprint rows of
# bench/pipeline.py).
_DRIVER_NODE_OPTIONS = "--max-semi-space-size=1"
_DRIVER_MALLOC_ARENAS = "1"


@contextlib.contextmanager
def _driver_environment() -> Iterator[None]:
    """The environment of the driver Playwright spawns now (it copies os.environ): our
    NODE_OPTIONS after the user's own, the user's MALLOC_ARENA_MAX if set; restored once
    the driver runs."""
    saved = {name: os.environ.get(name) for name in ("NODE_OPTIONS", "MALLOC_ARENA_MAX")}
    os.environ["NODE_OPTIONS"] = f"{saved['NODE_OPTIONS'] or ''} {_DRIVER_NODE_OPTIONS}".strip()
    os.environ.setdefault("MALLOC_ARENA_MAX", _DRIVER_MALLOC_ARENAS)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
