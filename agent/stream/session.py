"""One stream session: a pipeline, its publication and the Cast device it is shown on.

The session composes the three and owns the decisions about them: when to heal the pipeline
and when to give up. The parts only report facts and offer actions.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass

from loguru import logger

from agent.cast.base import CastDevice, CastManager
from agent.errors import ErrorCode, PagecastError
from agent.redact import redact_url
from agent.retry import Backoff
from agent.stream.casting import Casting, Parking
from agent.stream.page_keeper import PageKeeper
from agent.stream.pipeline import Pipeline, PipelineParts
from agent.stream.publication import Publication
from agent.stream.rotation import Showing
from agent.stream.waiting import WaitingReasons
from agent.supervisor.session import SessionListener, StreamRequest
from agent.supervisor.state import EventName, StreamFigures
from agent.web.server import WebServer

_WATCH_INTERVAL_S = 0.25
# Segments ready before the device is told to LOAD: receivers start a few segments behind
# the live edge, and the device's app launch takes longer than this anyway.
_SEGMENTS_BEFORE_CAST = 2
# The restart budget counts a crash loop, not a lifetime: a pipeline that ran this long without
# trouble since its last heal gets it back, so faults days apart never add up to giving up.
HEALTHY_RESET_S = 30.0
_HEAL_BACKOFF_MIN_S = 0.25
_HEAL_BACKOFF_MAX_S = 5.0
# Starts in a burst arrive faster than pages load, each cancelling the switch before it: a
# switch that waits this long before navigating is cancelled before Chromium hears of it.
_SWITCH_SETTLE_S = 0.05
# A browser that could not be recycled (its page did not load) is tried again after this.
_RECYCLE_RETRY_MIN_S = 60.0
_RECYCLE_RETRY_MAX_S = 3600.0


@dataclass(frozen=True, slots=True)
class SessionParts(PipelineParts):
    """What the backend lends every session."""

    cast: CastManager
    web: WebServer
    on_snapshot: Callable[[bytes | None], None]


class PipelineSession:
    """Implements ``StreamSession`` (agent/supervisor/session.py)."""

    def __init__(
        self,
        parts: SessionParts,
        session_id: str,
        request: StreamRequest,
        listener: SessionListener,
    ) -> None:
        self._parts = parts
        self._settings = parts.settings
        self._session_id = session_id
        self._request = request
        self._listener = listener
        stream = parts.settings.stream
        self._publication = Publication(
            parts.web,
            parts.work_dir,
            stream.public_host,
            stream.segment_length_s,
            parts.on_snapshot,
        )
        self._pipeline = Pipeline(parts, request, self._publication.directory)
        self._casting: Casting | None = None
        # The device and the page may both keep the screen dark: one reason for the status.
        waiting = WaitingReasons(listener)
        self._cast_listener = waiting.part("cast")
        self._page_keeper = PageKeeper(
            self._pipeline, waiting.part("page"), parts.settings.stream.reload_every_s
        )
        self._showing = Showing(self._pipeline, listener)
        self._watcher: asyncio.Task[None] | None = None
        self._keeping: asyncio.Task[None] | None = None
        self._stopping: asyncio.Task[None] | None = None
        self._heal_backoff = Backoff(_HEAL_BACKOFF_MIN_S, _HEAL_BACKOFF_MAX_S)
        self._healthy_since = time.monotonic()
        recycle_after_h = parts.settings.browser.recycle_after_h
        self._recycle_after_s = recycle_after_h * 3600 if recycle_after_h else None
        self._recycle_backoff = Backoff(_RECYCLE_RETRY_MIN_S, _RECYCLE_RETRY_MAX_S)
        self._recycle_not_before = 0.0

    def _logging(self) -> contextlib.AbstractContextManager[None]:
        """Binds session, URL and quality to every log line of the work inside, including the
        processes' and the watcher task's (tasks inherit the context they were created in)."""
        return logger.contextualize(
            session_id=self._session_id, url=self._request.url, quality=self._request.quality
        )

    @property
    def stream_path(self) -> str:
        return self._publication.path

    # -- StreamSession -----------------------------------------------------------------------

    async def start(self) -> None:
        with self._logging():
            logger.info("starting pipeline")
            device, away = await self._start_parts()
            stream_url = await self._publication.url(device.host if device else None)
            self._publication.publish()
            self._page_keeper.note()  # a resumed wish whose page is down waits for it
            self._listener.set_title(await self._pipeline.title())
            self._listener.set_stream_url(stream_url)
            self._watcher = asyncio.create_task(self._watch(), name="pipeline-watch")
            self._keeping = asyncio.create_task(self._page_keeper.run(), name="page-keeper")
            if device is not None or away:
                await self._cast(device, stream_url)
            else:
                logger.info("streaming without a Cast device at {}", stream_url)
            # From here the first page of a rotation has its full time on screen.
            self._showing.begin(self._request)

    async def _cast(self, device: CastDevice | None, stream_url: str) -> None:
        self._casting = self._cast_to(device)
        await self._pipeline.wait_for_segments(_SEGMENTS_BEFORE_CAST)
        # The TV shows the title: a URL standing in for it must not show its password.
        title = await self._pipeline.title() or redact_url(self._request.url)
        if device is None:
            # A resumed wish: nobody waits for an answer, so the device is waited for.
            resolve = functools.partial(self._parts.cast.resolve, self._request.device)
            self._casting.await_device(resolve, self._stream_url, title)
            return
        await self._casting.show(stream_url, title, resumed=self._request.resumed)

    async def _stream_url(self, device_host: str) -> str:
        return await self._publication.url(device_host)

    def _cast_to(self, device: CastDevice | None) -> Casting:
        parking = Parking(park=self._pipeline.park, unpark=self._pipeline.unpark)
        return Casting(device, self._cast_listener, self._settings.cast, parking)

    async def _start_parts(self) -> tuple[CastDevice | None, bool]:
        """Find the device while the pipeline comes up; both must succeed, except that a
        resumed wish waits for a device not reachable now (True: waiting for it)."""
        try:
            async with asyncio.TaskGroup() as group:
                resolving = group.create_task(self._resolve())
                await self._pipeline.start()
        except ExceptionGroup as group_error:
            # A device found before the pipeline failed is kept, so that stop() can close a
            # receiver the previous session handed over to this one.
            if resolving.done() and not resolving.cancelled() and not resolving.exception():
                device, _ = resolving.result()
                if device is not None:
                    self._casting = self._cast_to(device)
            raise _most_telling(group_error) from None
        return resolving.result()

    async def _resolve(self) -> tuple[CastDevice | None, bool]:
        try:
            return await self._parts.cast.resolve(self._request.device), False
        except PagecastError as exc:
            away = exc.code in (ErrorCode.DEVICE_UNREACHABLE, ErrorCode.DEVICE_NOT_FOUND)
            if not (self._request.resumed and away):
                raise
            logger.warning("{}: waiting for the device", exc.message)
            return None, True

    def can_switch(self, request: StreamRequest) -> bool:
        return (
            self._pipeline.running
            and self._stopping is None
            and (request.quality, request.device, request.auth)
            == (self._request.quality, self._request.device, self._request.auth)
        )

    async def switch(self, session_id: str, request: StreamRequest) -> None:
        """Navigate in place. A page that does not load never costs the stream: the previous
        page is loaded again (retried like an unreachable one if it fails too) and the
        PAGE_LOAD_FAILED goes on to the supervisor, which keeps the previous wish."""
        previous = self._session_id, self._request
        self._session_id, self._request = session_id, request
        with self._logging():
            logger.info("switching page in place")
            await self._showing.end()
            await asyncio.sleep(_SWITCH_SETTLE_S)
            try:
                await self._pipeline.navigate(request)
            except PagecastError as exc:
                if exc.code is not ErrorCode.PAGE_LOAD_FAILED:
                    raise
                await self._back_to(*previous, exc)
                raise
            finally:
                self._page_keeper.loaded()
            self._listener.set_title(await self._pipeline.title())
            self._showing.begin(request)

    def reload(self) -> None:
        self._showing.reload()

    def next_page(self) -> bool:
        return self._showing.advance()

    async def set_volume(self, level: float | None, muted: bool | None) -> None:
        device = self._casting.device if self._casting is not None else None
        if device is None:
            raise PagecastError(ErrorCode.DEVICE_NOT_FOUND, "this stream is cast to no device")
        await device.set_volume(level, muted)

    async def _back_to(self, session_id: str, request: StreamRequest, exc: PagecastError) -> None:
        self._session_id, self._request = session_id, request
        with self._logging():
            logger.warning("{}; showing the previous page again", exc.message)
            with contextlib.suppress(PagecastError):
                await self._pipeline.navigate(request)
            self._showing.begin(request)  # the previous wish's rotation, if it had one

    async def stop(
        self, successor: StreamRequest | None = None, deadline: float | None = None
    ) -> None:
        """One teardown however many callers ask; each returns once it is complete.

        ``deadline`` (event loop time) bounds the device's stop request."""
        if self._stopping is None:
            handover = successor is not None and successor.device == self._request.device
            stopping = self._stop(handover, deadline)
            self._stopping = asyncio.create_task(stopping, name="session-stop")
        await asyncio.shield(self._stopping)

    async def _stop(self, handover: bool, deadline: float | None) -> None:
        with self._logging():
            logger.info("stopping pipeline")
            await self._showing.end()
            for task in (self._watcher, self._keeping):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            try:
                if self._casting is not None:
                    await self._casting.stop(handover=handover, deadline=deadline)
            finally:
                self._publication.unpublish()
                await self._pipeline.stop()
                logger.info("pipeline stopped")

    def figures(self) -> StreamFigures | None:
        return self._pipeline.figures(self._heal_backoff.attempts)

    # -- self-healing ------------------------------------------------------------------------

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(_WATCH_INTERVAL_S)
            await self._publication.check_snapshot()
            await self._pipeline.note_progress()
            reason = self._pipeline.trouble()
            with self._logging():  # the current session id and URL, also after a switch
                if reason is not None:
                    if not await self._heal(reason):
                        return
                    self._page_keeper.note()
                    continue
                if time.monotonic() - self._healthy_since > HEALTHY_RESET_S:
                    self._heal_backoff.reset()
                if self._due_for_recycling():
                    await self._recycle()

    # -- recycling ---------------------------------------------------------------------------

    def _due_for_recycling(self) -> bool:
        return (
            self._recycle_after_s is not None
            and self._pipeline.browser_age_s > self._recycle_after_s
            and time.monotonic() >= self._recycle_not_before
            # A fresh browser could not load an unreachable page either; and while parked
            # nothing runs that could grow old.
            and not self._page_keeper.unreachable
            and not self._pipeline.parked
        )

    async def _recycle(self) -> None:
        age_h = self._pipeline.browser_age_s / 3600
        logger.info("recycling the browser after {:.2f} h", age_h)
        try:
            await self._pipeline.recycle()
        except Exception as exc:
            delay = self._recycle_backoff.next()
            self._recycle_not_before = time.monotonic() + delay
            logger.warning("could not recycle the browser ({}); again in {:.0f} s", exc, delay)
            return
        self._recycle_backoff.reset()
        logger.info("browser recycled")
        self._listener.event(EventName.RECYCLED, after_h=round(age_h, 3))

    async def _heal(self, reason: str) -> bool:
        max_restarts = self._settings.stream.max_restarts
        logger.warning("pipeline broken ({}); restarting", reason)
        while self._heal_backoff.attempts < max_restarts:
            await asyncio.sleep(self._heal_backoff.next())
            try:
                await self._pipeline.heal()
            except Exception as exc:
                logger.warning("restart {} failed: {}", self._heal_backoff.attempts, exc)
                reason = str(exc)
                continue
            self._healthy_since = time.monotonic()
            logger.info("pipeline recovered after: {}", reason)
            self._listener.event(
                EventName.RECOVERED, reason=reason, restarts=self._heal_backoff.attempts
            )
            return True
        error = PagecastError(
            ErrorCode.PIPELINE_FAILED, f"gave up after {max_restarts} restarts: {reason}"
        )
        logger.error(error.message)
        self._listener.ended(error, reason)
        return False


def _most_telling(group: ExceptionGroup[Exception]) -> Exception:
    """The error to report when both halves of a start failed: ours over unexpected ones."""
    errors = list(_leaves(group))
    return next((e for e in errors if isinstance(e, PagecastError)), errors[0])


def _leaves(error: Exception) -> list[Exception]:
    if isinstance(error, ExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    return [error]
