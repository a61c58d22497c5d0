"""The media pipeline of one session: a page on a screen, ffmpeg encoding it into live HLS.

It reports facts (what is broken, how old the newest segment is) and offers actions (start,
navigate, heal, stop); deciding when to heal and when to give up is the session's.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from loguru import logger
from playwright.async_api import Page

from agent.config import Settings
from agent.errors import ErrorCode, PagecastError
from agent.stream import navigation
from agent.stream.browser import BrowserPage, Geometry
from agent.stream.encoder import Encoder, EncoderSpec, require_running
from agent.stream.hls import media_bitrate_kbps, read_playlist
from agent.stream.screen import Screen, ScreenKeeper
from agent.supervisor.session import StreamRequest
from agent.supervisor.state import StreamFigures

_FIRST_SEGMENT_TIMEOUT_S = 15.0
# ffmpeg alive but no new segment for this many segment lengths (at least _STALL_MIN_S):
# it hangs (e.g. on a display that went away) and is restarted like a dead one.
_STALL_SEGMENTS = 4
_STALL_MIN_S = 4.0


@dataclass(frozen=True, slots=True)
class PipelineParts:
    """What the backend lends every pipeline."""

    settings: Settings
    screens: ScreenKeeper
    work_dir: Path


class Pipeline:
    """Screen + page + encoder writing one live playlist into ``directory``."""

    def __init__(self, parts: PipelineParts, request: StreamRequest, directory: Path) -> None:
        self._settings = parts.settings
        self._screens = parts.screens
        self._request = request
        self.directory = directory
        preset = parts.settings.qualities[request.quality]
        self._geometry = Geometry(preset.width, preset.height, preset.zoom, preset.fps)
        self._screen: Screen | None = None
        self._page: BrowserPage | None = None
        # A rotation's next page, loaded behind the one on screen (see prepare()).
        self._prepared: Page | None = None
        self._encoder: Encoder | None = None
        self._holding_screen = False
        # (newest segment sequence, when it was first seen): the encoder's heartbeat.
        self._progress: tuple[int | None, float] = (None, time.monotonic())
        # A navigation and a heal both replace or navigate the page: one at a time.
        self._page_work = asyncio.Lock()
        # Parked: page closed and encoder stopped on purpose (nobody watches), not broken.
        self.parked = False

    @property
    def running(self) -> bool:
        return self._encoder is not None

    # -- bringing it up and down -------------------------------------------------------------

    async def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=False)
        self._screen = await self._screens.acquire(self._geometry)
        self._holding_screen = True
        # The page first: the stream then opens on the page, not on a blank window, and a
        # page that fails to load never costs an encoder.
        await self._open_page()
        self._encoder = Encoder(self._encoder_spec(self._screen), self.directory)
        await self._encoder.start()
        await self.wait_for_segments(1)

    async def stop(self) -> None:
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
                await self._screens.release()
            await asyncio.to_thread(shutil.rmtree, self.directory, True)

    async def navigate(self, request: StreamRequest) -> None:
        """Show ``request.url`` on the running page: the encoder and the stream carry on."""
        self._request = request
        async with self._page_work:
            if self._page is None:
                raise PagecastError(ErrorCode.PIPELINE_FAILED, "no page to switch")
            await self._drop_prepared()
            await navigation.load(
                self._page.page, request.url, self._settings.stream.page_load_timeout_s
            )

    async def title(self) -> str | None:
        return await self._page.title() if self._page else None

    async def reload(self) -> None:
        """Load the page on screen again, in place."""
        async with self._page_work:
            if self._page is None:
                raise PagecastError(ErrorCode.PIPELINE_FAILED, "no page to reload")
            page = self._page.page
            await navigation.load(page, page.url, self._settings.stream.page_load_timeout_s)

    # -- a page behind the page (rotations: agent/stream/rotation.py) ----------------------------

    async def prepare(self, url: str) -> None:
        """Load ``url`` in a tab behind the page on screen; show_prepared() swaps them."""
        async with self._page_work:
            if self._page is None:
                raise PagecastError(ErrorCode.PIPELINE_FAILED, "no page to prepare beside")
            if self._prepared is None or self._prepared.is_closed():
                self._prepared = await self._page.background_tab()
            await navigation.load(self._prepared, url, self._settings.stream.page_load_timeout_s)

    async def show_prepared(self) -> None:
        """Bring the prepared tab to the front: the window shows it from its next frame, no
        blank in between (it is painted already). The old front page is the next to prepare."""
        async with self._page_work:
            front, prepared = self._page, self._prepared
            if front is None or prepared is None or prepared.is_closed():
                raise PagecastError(ErrorCode.PIPELINE_FAILED, "no prepared page to show")
            self._prepared = await front.bring_forward(prepared)

    async def _drop_prepared(self) -> None:
        prepared, self._prepared = self._prepared, None
        if prepared is not None and not prepared.is_closed():
            await prepared.close()

    def _encoder_spec(self, screen: Screen) -> EncoderSpec:
        preset = self._settings.qualities[self._request.quality]
        snapshot = self._settings.snapshot
        return EncoderSpec(
            display=screen.display.name,
            width=self._geometry.width,
            height=self._geometry.height,
            fps=preset.fps,
            bitrate_kbps=preset.bitrate_kbps,
            segment_seconds=self._settings.stream.segment_seconds,
            playlist_size=self._settings.stream.playlist_size,
            snapshot_interval_s=snapshot.interval if snapshot.enabled else None,
        )

    async def _open_page(self) -> None:
        assert self._screen is not None
        profile = self._settings.auth_profile(self._request.auth)
        if self._page is not None:
            await self._page.close()
        self._prepared = None  # closed with its context
        self._page = await self._screen.take_page(profile)
        await navigation.load(
            self._page.page, self._request.url, self._settings.stream.page_load_timeout_s
        )

    async def wait_for_segments(self, count: int, after: int | None = None) -> None:
        """Until the playlist lists ``count`` segments (newer than sequence ``after``)."""
        assert self._encoder is not None
        deadline = time.monotonic() + _FIRST_SEGMENT_TIMEOUT_S
        while True:
            playlist = read_playlist(self.directory)
            if playlist is not None and playlist.last_sequence is not None:
                first_new = max(playlist.media_sequence, (after or -1) + 1)
                if playlist.last_sequence - first_new + 1 >= count:
                    return
            require_running(self._encoder)
            if time.monotonic() > deadline:
                raise PagecastError(ErrorCode.PIPELINE_FAILED, "ffmpeg wrote no segments")
            await asyncio.sleep(0.05)

    # -- facts -------------------------------------------------------------------------------

    def note_progress(self) -> None:
        """Record whether a new segment appeared since the last look (call periodically)."""
        playlist = read_playlist(self.directory)
        newest = playlist.last_sequence if playlist else None
        if newest != self._progress[0]:
            self._progress = (newest, time.monotonic())

    @property
    def segment_age_s(self) -> float:
        """Seconds since the newest segment was first seen (as of the last note_progress)."""
        return time.monotonic() - self._progress[1]

    @property
    def stalled(self) -> bool:
        limit = max(_STALL_SEGMENTS * self._settings.stream.segment_seconds, _STALL_MIN_S)
        return self.segment_age_s > limit

    def trouble(self) -> str | None:
        """What is broken, in a phrase for logs and events; None when all runs (or parked)."""
        if self.parked:
            return None
        screen, page, encoder = self._screen, self._page, self._encoder
        if screen is None or not screen.display.alive:
            return "Xvfb died"
        if screen.browser is None or not screen.browser.alive:
            return "Chromium died"
        if page is None or not page.alive:
            return "the page crashed"
        if encoder is None or not encoder.alive:
            return encoder.failure() if encoder else "ffmpeg not running"
        if self.stalled:
            return "ffmpeg stalled: no new segment"
        return None

    def figures(self, restarts: int) -> StreamFigures | None:
        if self._encoder is None or not self._encoder.alive:
            return None
        progress = self._encoder.progress
        return StreamFigures(
            fps=progress.fps,
            bitrate_kbps=progress.bitrate_kbps or media_bitrate_kbps(self.directory),
            frames=progress.frames,
            dropped_frames=progress.dropped_frames,
            duplicated_frames=progress.duplicated_frames,
            restarts=restarts,
            segment_age_s=round(self.segment_age_s, 2),
        )

    # -- parking -----------------------------------------------------------------------------

    async def park(self) -> None:
        """Stop rendering and encoding while nobody can watch (the TV is off); the screen, the
        stream URL and the playlist numbering are kept for unpark()."""
        async with self._page_work:
            if self.parked:
                return
            self.parked = True
            if self._encoder is not None:
                # Killed, not stopped: a clean exit would write ENDLIST into the playlist.
                await self._encoder.kill()
            if self._page is not None:
                await self._page.close()
                self._page = None
                self._prepared = None
        logger.info("pipeline parked")

    async def unpark(self) -> None:
        """Bring the page and the encoder back; the playlist continues where it stopped."""
        async with self._page_work:
            if not self.parked:
                return
            await self._heal()
            self.parked = False
        logger.info("pipeline back from parking")

    # -- healing -----------------------------------------------------------------------------

    async def heal(self) -> None:
        """Restart exactly what died; the stream URL and the playlist numbering carry on."""
        async with self._page_work:
            await self._heal()
        logger.debug("pipeline parts restarted")

    async def _heal(self) -> None:
        assert self._screen is not None
        assert self._encoder is not None
        before = read_playlist(self.directory)
        display_replaced = not self._screen.display.alive
        if display_replaced:
            self._screen = await self._screens.replace(self._geometry)
            self._page = None
            self._encoder.spec = self._encoder_spec(self._screen)
        elif self._screen.browser is None or not self._screen.browser.alive:
            await self._screen.restart_browser()
            self._page = None
        if self._page is None or not self._page.alive:
            await self._open_page()
        if display_replaced or not self._encoder.alive or self.stalled:
            # An ffmpeg still attached to a dead display would capture nothing forever.
            await self._encoder.start()
        await self.wait_for_segments(1, after=before.last_sequence if before else None)
        self._progress = (None, time.monotonic())
