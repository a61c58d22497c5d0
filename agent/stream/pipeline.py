"""The media pipeline of one session: a page on a screen, ffmpeg encoding it into live HLS.

It reports facts (what is broken, whether the page loaded, how old the newest segment and the
browser are) and offers actions (start, navigate, reload, heal, recycle, park, stop); deciding
when to heal, retry or recycle, and when to give up, is the session's.
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
from agent.stream import hwaccel, navigation
from agent.stream.browser import BrowserPage, Geometry
from agent.stream.encoder import Encoder, EncoderSpec, require_running
from agent.stream.hls import Playlist, media_bitrate_kbps, read_playlist
from agent.stream.screen import Screen, ScreenKeeper
from agent.supervisor.session import StreamRequest
from agent.supervisor.state import StreamFigures

_FIRST_SEGMENT_TIMEOUT_S = 15.0
_SEGMENT_POLL_S = 0.05


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
        self._geometry = Geometry.of(parts.settings.qualities[request.quality])
        self._screen: Screen | None = None
        self._page: BrowserPage | None = None
        # The page that should be on screen: the request's, or the rotation page shown last.
        self._url = request.url
        # A rotation's next page, loaded behind the one on screen (see prepare()).
        self._prepared: tuple[Page, str] | None = None
        self._encoder: Encoder | None = None
        self._codec = hwaccel.X264
        self._holding_screen = False
        # (newest segment sequence, when it was first seen): the encoder's heartbeat.
        self._progress: tuple[int | None, float] = (None, time.monotonic())
        self._bitrate_kbps: float | None = None
        # Navigations, reloads, heals and recycles all replace or navigate the page: one at a
        # time.
        self._page_work = asyncio.Lock()
        # Parked: page closed and encoder stopped on purpose (nobody watches), not broken.
        self.parked = False
        # Why the page on screen is not the wished one (its last load failed); None: it is.
        self.page_error: str | None = None

    @property
    def running(self) -> bool:
        return self._encoder is not None

    @property
    def url(self) -> str:
        """The page the pipeline is asked to show (a rotation's: the one shown last)."""
        return self._url

    @property
    def busy(self) -> bool:
        """A navigation, reload, heal or recycle is under way: ``page_error`` may be passing."""
        return self._page_work.locked()

    @property
    def browser_age_s(self) -> float:
        """Seconds since the Chromium showing the page was launched."""
        return self._screen.browser_age_s if self._screen is not None else 0.0

    # -- bringing it up and down -------------------------------------------------------------

    async def start(self) -> None:
        """Page, then encoder. A page that does not load fails the start, except for a resumed
        wish: nobody waits for an answer, so its stream comes up (on Chromium's error page)
        with ``page_error`` set, for the session to retry."""
        await asyncio.to_thread(self.directory.mkdir, parents=True, exist_ok=False)
        self._screen = await self._screens.acquire(self._geometry)
        self._holding_screen = True
        # The page first: the stream then opens on the page, not on a blank window, and a
        # page that fails to load never costs an encoder.
        await self._open_page(strict=not self._request.resumed)
        self._codec = await hwaccel.chosen(self._settings.stream.encoder)
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
        """Show ``request.url`` on the running page: the encoder and the stream carry on.

        Raises PAGE_LOAD_FAILED when the page does not load; the page then shows whatever
        Chromium made of it until the next navigation.
        """
        self._request, self._url = request, request.url
        async with self._page_work:
            if self._page is None:
                raise PagecastError(ErrorCode.PIPELINE_FAILED, "no page to switch")
            await self._drop_prepared()
            await self._load()

    async def reload(self) -> None:
        """Load the wished page afresh in place (a retry or a periodic reload).

        Raises PAGE_LOAD_FAILED; ``page_error`` says the same. Nothing to do while parked.
        """
        async with self._page_work:
            if self._page is not None and not self.parked:
                await self._load()

    async def title(self) -> str | None:
        return await self._page.title() if self._page else None

    # -- a page behind the page (rotations: agent/stream/rotation.py) ----------------------------

    async def prepare(self, url: str) -> None:
        """Load ``url`` in a tab behind the page on screen; show_prepared() swaps them.
        Raises PAGE_LOAD_FAILED."""
        async with self._page_work:
            if self._page is None or self.parked:
                raise PagecastError(ErrorCode.PIPELINE_FAILED, "no page to prepare beside")
            tab = self._prepared[0] if self._prepared else None
            self._prepared = None
            if tab is None or tab.is_closed():
                tab = await self._page.background_tab()
            await navigation.load(tab, url, self._settings.stream.page_load_timeout_s)
            self._prepared = (tab, url)

    async def show_prepared(self) -> None:
        """Bring the prepared tab to the front: the window shows it from its next frame, no
        blank in between (it is painted already). The old front page is the next to prepare."""
        async with self._page_work:
            front, prepared = self._page, self._prepared
            if front is None or prepared is None or prepared[0].is_closed():
                raise PagecastError(ErrorCode.PIPELINE_FAILED, "no prepared page to show")
            behind = await front.bring_forward(prepared[0])
            self._prepared, self._url, self.page_error = (behind, prepared[1]), prepared[1], None

    async def _drop_prepared(self) -> None:
        prepared, self._prepared = self._prepared, None
        if prepared is not None and not prepared[0].is_closed():
            await prepared[0].close()

    def _encoder_spec(self, screen: Screen) -> EncoderSpec:
        preset = self._settings.qualities[self._request.quality]
        snapshot = self._settings.snapshot
        return EncoderSpec(
            display=screen.display.name,
            width=self._geometry.width,
            height=self._geometry.height,
            fps=preset.fps,
            bitrate_kbps=preset.bitrate_kbps,
            segment_seconds=self._settings.stream.segment_length_s,
            playlist_size=self._settings.stream.playlist_length,
            snapshot_interval_s=snapshot.interval if snapshot.enabled else None,
            dedupe=self._settings.stream.dedupe,
            codec=self._codec,
            start_offset_s=self._settings.stream.start_offset_s,
        )

    async def _open_page(self, *, strict: bool) -> None:
        """A fresh page on the screen, loading the wished URL; ``strict``: a load failure
        raises, else it is only recorded in ``page_error`` and the page stays open."""
        assert self._screen is not None
        if self._page is not None:
            await self._page.close()
            self._page = None
        self._prepared = None  # closed with its context
        self._page = await self._screen.new_page(self._settings.auth_profile(self._request.auth))
        try:
            await self._load()
        except PagecastError as exc:
            if strict or exc.code is not ErrorCode.PAGE_LOAD_FAILED:
                raise
            logger.warning("page did not load: {}", exc.message)

    async def _load(self) -> None:
        assert self._page is not None
        try:
            await navigation.load(
                self._page.page, self._url, self._settings.stream.page_load_timeout_s
            )
        except PagecastError as exc:
            self.page_error = exc.message
            raise
        self.page_error = None

    async def wait_for_segments(self, count: int, after: int | None = None) -> None:
        """Until the playlist lists ``count`` segments (newer than sequence ``after``)."""
        assert self._encoder is not None
        deadline = time.monotonic() + _FIRST_SEGMENT_TIMEOUT_S
        while True:
            playlist = await asyncio.to_thread(read_playlist, self.directory)
            if playlist is not None and playlist.last_sequence is not None:
                first_new = max(playlist.media_sequence, (after or -1) + 1)
                if playlist.last_sequence - first_new + 1 >= count:
                    return
            require_running(self._encoder)
            if time.monotonic() > deadline:
                raise PagecastError(ErrorCode.PIPELINE_FAILED, "ffmpeg wrote no segments")
            await asyncio.sleep(_SEGMENT_POLL_S)

    async def _newest_sequence(self) -> int | None:
        playlist = await asyncio.to_thread(read_playlist, self.directory)
        return playlist.last_sequence if playlist else None

    # -- facts -------------------------------------------------------------------------------

    async def note_progress(self) -> None:
        """Record whether a new segment appeared since the last look (call periodically)."""
        playlist, bitrate = await asyncio.to_thread(_look, self.directory, self._progress[0])
        newest = playlist.last_sequence if playlist else None
        if newest != self._progress[0]:
            self._progress = (newest, time.monotonic())
            self._bitrate_kbps = bitrate

    @property
    def segment_age_s(self) -> float:
        """Seconds since the newest segment was first seen (as of the last note_progress)."""
        return time.monotonic() - self._progress[1]

    @property
    def stalled(self) -> bool:
        return self.segment_age_s > self._settings.stream.stall_after_s

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
        """From what the encoder reported and note_progress() saw: no file is read here."""
        if self._encoder is None or not self._encoder.alive:
            return None
        progress = self._encoder.progress
        return StreamFigures(
            fps=progress.fps,
            bitrate_kbps=progress.bitrate_kbps or self._bitrate_kbps,
            frames=progress.frames,
            dropped_frames=progress.dropped_frames,
            duplicated_frames=progress.duplicated_frames,
            restarts=restarts,
            segment_age_s=round(self.segment_age_s, 2),
            encoder=self._codec.name,
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
        """Restart exactly what died; the stream URL and the playlist numbering carry on.

        A page that does not load again is no reason to fail: the stream runs on Chromium's
        error page, ``page_error`` says why, and the session retries.
        """
        async with self._page_work:
            await self._heal()
        logger.debug("pipeline parts restarted")

    async def _heal(self) -> None:
        assert self._screen is not None
        assert self._encoder is not None
        before = await self._newest_sequence()
        display_replaced = not self._screen.display.alive
        if display_replaced:
            self._screen = await self._screens.replace(self._geometry)
            self._page = None
            self._encoder.spec = self._encoder_spec(self._screen)
        elif self._screen.browser is None or not self._screen.browser.alive:
            await self._screen.restart_browser()
            self._page = None
        if self._page is None or not self._page.alive:
            await self._open_page(strict=False)
        if display_replaced or not self._encoder.alive or self.stalled:
            # An ffmpeg still attached to a dead display would capture nothing forever.
            await self._encoder.start()
        await self.wait_for_segments(1, after=before)
        self._progress = (None, time.monotonic())

    # -- recycling ---------------------------------------------------------------------------

    async def recycle(self) -> None:
        """Move the stream to a fresh Xvfb and Chromium (weeks of one browser leak memory).

        The new browser loads the page on its own display while the old one is captured;
        only once it has painted does ffmpeg move over, restarted right after a segment
        boundary in append mode: the playlist goes on with the next number behind the same
        URL, and no frame shows a blank window. A page that does not load in the new browser
        raises PAGE_LOAD_FAILED and leaves everything as it was.
        """
        async with self._page_work:
            if self.parked or self._encoder is None:
                return
            screen = await self._screens.fresh(self._geometry)
            try:
                page = await screen.new_page(self._settings.auth_profile(self._request.auth))
                await navigation.load(
                    page.page, self._url, self._settings.stream.page_load_timeout_s
                )
                # Right after a segment is complete: the killed ffmpeg loses (almost) nothing.
                await self.wait_for_segments(1, after=await self._newest_sequence())
            except BaseException:
                await screen.close()
                raise
            before = await self._newest_sequence()
            self._screen, self._page, self._prepared = screen, page, None
            self._encoder.spec = self._encoder_spec(screen)
            try:
                await self._encoder.start()
            finally:
                await self._screens.adopt(screen)  # the old screen and its page close
            await self.wait_for_segments(1, after=before)
            self._progress = (None, time.monotonic())


def _look(directory: Path, known: int | None) -> tuple[Playlist | None, float | None]:
    """The playlist, and the media bitrate when a new segment came (in a worker thread)."""
    playlist = read_playlist(directory)
    if playlist is None or playlist.last_sequence == known:
        return playlist, None
    return playlist, media_bitrate_kbps(directory)
