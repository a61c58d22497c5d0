"""One stream session: a page on the screen, ffmpeg encoding it, a Cast device playing it."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from loguru import logger

from agent.cast.base import CastDevice, CastManager
from agent.config import Settings
from agent.errors import ErrorCode, PagecastError
from agent.stream import navigation
from agent.stream.address import stream_host
from agent.stream.browser import BrowserPage, Geometry
from agent.stream.encoder import SNAPSHOT_FILE, Encoder, EncoderSpec, require_running
from agent.stream.hls import MASTER_PLAYLIST, media_bitrate_kbps, read_playlist
from agent.stream.screen import Screen, ScreenKeeper
from agent.supervisor.session import SessionListener, StreamRequest
from agent.supervisor.state import EventName, StreamFigures
from agent.web.server import WebServer

_WATCH_INTERVAL_S = 0.25
_FIRST_SEGMENT_TIMEOUT_S = 15.0
# Segments ready before the device is told to LOAD: receivers start a few segments behind
# the live edge, and the device's app launch takes longer than this anyway.
_SEGMENTS_BEFORE_CAST = 2
# A session that ran this long without trouble gets its full restart budget back.
_HEALTHY_RESET_S = 300.0
# ffmpeg alive but no new segment for this many segment lengths (at least _STALL_MIN_S):
# it hangs (e.g. on a display that went away) and is restarted like a dead one.
_STALL_SEGMENTS = 4
_STALL_MIN_S = 4.0


@dataclass(frozen=True, slots=True)
class PipelineParts:
    """What the backend lends every session."""

    settings: Settings
    cast: CastManager
    screens: ScreenKeeper
    web: WebServer
    work_dir: Path
    on_snapshot: Callable[[bytes | None], None]


class PipelineSession:
    """Implements ``StreamSession`` (agent/supervisor/session.py)."""

    def __init__(
        self,
        parts: PipelineParts,
        session_id: str,
        request: StreamRequest,
        listener: SessionListener,
    ) -> None:
        self._parts = parts
        self._settings = parts.settings
        self._request = request
        self._listener = listener
        preset = parts.settings.qualities[request.quality]
        self._geometry = Geometry(preset.width, preset.height, preset.zoom, preset.fps)
        self._token = secrets.token_urlsafe(18)
        self._directory = parts.work_dir / f"session-{self._token[:8]}"
        snapshot = parts.settings.snapshot
        self._spec_template = (
            preset.fps,
            preset.bitrate_kbps,
            snapshot.interval if snapshot.enabled else None,
        )
        self._session_id = session_id
        self._screen: Screen | None = None
        self._page: BrowserPage | None = None
        self._encoder: Encoder | None = None
        self._device: CastDevice | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._holding_screen = False
        self._restarts = 0
        self._healthy_since = time.monotonic()
        self._snapshot_mtime: float | None = None
        self._progress: tuple[int | None, float] = (None, time.monotonic())
        # A switch and a restart both replace or navigate the page: one at a time.
        self._page_work = asyncio.Lock()
        self._stopped = False

    # -- StreamSession -----------------------------------------------------------------------

    def _logging(self) -> contextlib.AbstractContextManager[None]:
        """Binds session, URL and quality to every log line of the work inside, including the
        processes' and the watcher task's (tasks inherit the context they were created in)."""
        return logger.contextualize(
            session_id=self._session_id, url=self._request.url, quality=self._request.quality
        )

    async def start(self) -> None:
        with self._logging():
            await self._start()

    async def _start(self) -> None:
        logger.info("starting pipeline")
        try:
            async with asyncio.TaskGroup() as group:
                # Finding and connecting the device overlaps with bringing the pipeline up.
                device_task = group.create_task(self._parts.cast.resolve(self._request.device))
                await self._start_pipeline()
        except ExceptionGroup as group_error:
            # A device found before the pipeline failed is kept, so that stop() can close a
            # receiver the previous session handed over to this one.
            if device_task.done() and not device_task.cancelled() and not device_task.exception():
                self._device = device_task.result()
            raise _most_telling(group_error) from None
        self._device = device_task.result()
        stream_url = self._stream_url()
        self._listener.set_stream_url(stream_url)
        self._watcher = asyncio.create_task(self._watch(), name="pipeline-watch")
        if self._device is None:
            logger.info("streaming without a Cast device at {}", stream_url)
            return
        await self._wait_for_segments(_SEGMENTS_BEFORE_CAST)
        title = await self._page.title() if self._page else None
        logger.info("casting to {}", self._device.name)
        await self._device.play(stream_url, title or self._request.url, self._listener)

    def can_switch(self, request: StreamRequest) -> bool:
        return (
            self._encoder is not None
            and not self._stopped
            and (request.quality, request.device, request.auth)
            == (self._request.quality, self._request.device, self._request.auth)
        )

    async def switch(self, session_id: str, request: StreamRequest) -> None:
        self._session_id, self._request = session_id, request
        with self._logging():
            logger.info("switching page in place")
            async with self._page_work:
                if self._page is None:
                    raise PagecastError(ErrorCode.PIPELINE_FAILED, "no page to switch")
                await navigation.load(
                    self._page.page, request.url, self._settings.stream.page_load_timeout_s
                )
                self._listener.set_title(await self._page.title())

    def reload(self) -> None:
        raise PagecastError(ErrorCode.NOT_STREAMING, "reload is not available yet")

    def next_page(self) -> bool:
        return False

    async def set_volume(self, level: float | None, muted: bool | None) -> None:
        raise PagecastError(ErrorCode.DEVICE_NOT_FOUND, "volume is not available yet")

    async def stop(self, successor: StreamRequest | None = None) -> None:
        if self._stopped:
            return
        self._stopped = True
        handover = successor is not None and successor.device == self._request.device
        with self._logging():
            await self._stop(handover)

    async def _stop(self, handover: bool) -> None:
        logger.info("stopping pipeline")
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        try:
            if self._device is not None and handover:
                # The next session plays on this device: keep the receiver up for its LOAD.
                await self._device.release()
            elif self._device is not None:
                try:
                    await asyncio.wait_for(self._device.stop(), 10)
                except Exception as exc:
                    logger.warning("stopping the Cast device failed: {}", exc)
        finally:
            await self._teardown()

    def figures(self) -> StreamFigures | None:
        if self._encoder is None or not self._encoder.alive:
            return None
        progress = self._encoder.progress
        return StreamFigures(
            fps=progress.fps,
            bitrate_kbps=progress.bitrate_kbps or media_bitrate_kbps(self._directory),
            frames=progress.frames,
            dropped_frames=progress.dropped_frames,
            duplicated_frames=progress.duplicated_frames,
            restarts=self._restarts,
        )

    # -- pipeline ----------------------------------------------------------------------------

    @property
    def stream_path(self) -> str:
        return f"/stream/{self._token}/{MASTER_PLAYLIST}"

    def _stream_url(self) -> str:
        stream = self._settings.stream
        host = stream_host(stream.public_host, self._device.host if self._device else None)
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"http://{host}:{self._parts.web.port}{self.stream_path}"

    async def _start_pipeline(self) -> None:
        self._directory.mkdir(parents=True, exist_ok=False)
        self._screen = await self._parts.screens.acquire(self._geometry)
        self._holding_screen = True
        # The page first: the stream then opens on the page, not on a blank window, and a
        # page that fails to load never costs an encoder.
        await self._open_page()
        self._encoder = Encoder(self._encoder_spec(self._screen), self._directory)
        await self._encoder.start()
        self._parts.web.publish(self._token, self._directory)
        await self._wait_for_segments(1)
        self._listener.set_title(await self._page.title() if self._page else None)

    def _encoder_spec(self, screen: Screen) -> EncoderSpec:
        fps, bitrate, snapshot_interval = self._spec_template
        return EncoderSpec(
            display=screen.display.name,
            width=self._geometry.width,
            height=self._geometry.height,
            fps=fps,
            bitrate_kbps=bitrate,
            segment_seconds=self._settings.stream.segment_seconds,
            playlist_size=self._settings.stream.playlist_size,
            snapshot_interval_s=snapshot_interval,
        )

    async def _open_page(self) -> None:
        assert self._screen is not None
        profile = None
        if self._request.auth is not None:
            profile = self._settings.auth.get(self._request.auth)
            if profile is None:
                raise PagecastError(
                    ErrorCode.INVALID_PAYLOAD, f"unknown auth profile {self._request.auth!r}"
                )
        if self._page is not None:
            await self._page.close()
        self._page = await self._screen.take_page(profile)
        await navigation.load(
            self._page.page, self._request.url, self._settings.stream.page_load_timeout_s
        )

    async def _wait_for_segments(self, count: int, after: int | None = None) -> None:
        """Until the playlist lists ``count`` segments (newer than sequence ``after``)."""
        assert self._encoder is not None
        deadline = time.monotonic() + _FIRST_SEGMENT_TIMEOUT_S
        while True:
            playlist = read_playlist(self._directory)
            if playlist is not None and playlist.last_sequence is not None:
                first_new = max(playlist.media_sequence, (after or -1) + 1)
                if playlist.last_sequence - first_new + 1 >= count:
                    return
            require_running(self._encoder)
            if time.monotonic() > deadline:
                raise PagecastError(ErrorCode.PIPELINE_FAILED, "ffmpeg wrote no segments")
            await asyncio.sleep(0.05)

    async def _teardown(self) -> None:
        self._parts.web.unpublish(self._token)
        self._parts.on_snapshot(None)
        try:
            if self._encoder is not None:
                await self._encoder.stop()
            if self._page is not None:
                await self._page.close()
                self._page = None
        finally:
            # Even when interrupted: a screen never handed back would block every later start.
            if self._holding_screen:
                self._holding_screen = False
                await self._parts.screens.release()
            await asyncio.to_thread(shutil.rmtree, self._directory, True)
        logger.info("pipeline stopped")

    # -- self-healing ------------------------------------------------------------------------

    def _trouble(self) -> str | None:
        screen, page, encoder = self._screen, self._page, self._encoder
        if screen is None or not screen.display.alive:
            return "Xvfb died"
        if screen.browser is None or not screen.browser.alive:
            return "Chromium died"
        if page is None or not page.alive:
            return "the page crashed"
        if encoder is None or not encoder.alive:
            return encoder.failure() if encoder else "ffmpeg not running"
        if self._stalled():
            return "ffmpeg stalled: no new segment"
        return None

    def _stalled(self) -> bool:
        playlist = read_playlist(self._directory)
        newest = playlist.last_sequence if playlist else None
        now = time.monotonic()
        if newest != self._progress[0]:
            self._progress = (newest, now)
            return False
        limit = max(_STALL_SEGMENTS * self._settings.stream.segment_seconds, _STALL_MIN_S)
        return now - self._progress[1] > limit

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(_WATCH_INTERVAL_S)
            self._check_snapshot()
            reason = self._trouble()
            if reason is None:
                if time.monotonic() - self._healthy_since > _HEALTHY_RESET_S:
                    self._restarts = 0
                continue
            with self._logging():  # the current session id and URL, also after a switch
                if not await self._recover(reason):
                    return

    async def _recover(self, reason: str) -> bool:
        max_restarts = self._settings.stream.max_restarts
        logger.warning("pipeline broken ({}); restarting", reason)
        while self._restarts < max_restarts:
            self._restarts += 1
            await asyncio.sleep(min(0.25 * 2 ** (self._restarts - 1), 5.0))
            try:
                async with self._page_work:
                    await self._heal()
            except Exception as exc:
                logger.warning("restart {} failed: {}", self._restarts, exc)
                reason = str(exc)
                continue
            self._healthy_since = time.monotonic()
            logger.info("pipeline recovered after: {}", reason)
            self._listener.event(EventName.RECOVERED, reason=reason, restarts=self._restarts)
            return True
        error = PagecastError(
            ErrorCode.PIPELINE_FAILED, f"gave up after {max_restarts} restarts: {reason}"
        )
        logger.error(error.message)
        self._listener.ended(error, reason)
        return False

    async def _heal(self) -> None:
        """Restart exactly what died; the stream URL and the playlist numbering carry on."""
        assert self._screen is not None
        assert self._encoder is not None
        before = read_playlist(self._directory)
        display_replaced = not self._screen.display.alive
        if display_replaced:
            self._screen = await self._parts.screens.replace(self._geometry)
            self._page = None
            self._encoder.spec = self._encoder_spec(self._screen)
        elif self._screen.browser is None or not self._screen.browser.alive:
            await self._screen.restart_browser()
            self._page = None
        if self._page is None or not self._page.alive:
            await self._open_page()
        if display_replaced or not self._encoder.alive or self._stalled():
            # An ffmpeg still attached to a dead display would capture nothing forever.
            await self._encoder.start()
        await self._wait_for_segments(1, after=before.last_sequence if before else None)
        self._progress = (None, time.monotonic())

    def _check_snapshot(self) -> None:
        path = self._directory / SNAPSHOT_FILE
        try:
            mtime = path.stat().st_mtime
            if mtime == self._snapshot_mtime:
                return
            data = path.read_bytes()
        except FileNotFoundError:
            return
        self._snapshot_mtime = mtime
        self._parts.on_snapshot(data)


def _most_telling(group: ExceptionGroup[Exception]) -> Exception:
    """The error to report when both halves of a start failed: ours over unexpected ones."""
    errors = list(_leaves(group))
    return next((e for e in errors if isinstance(e, PagecastError)), errors[0])


def _leaves(error: Exception) -> list[Exception]:
    if isinstance(error, ExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    return [error]
