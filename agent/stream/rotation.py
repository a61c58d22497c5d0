"""Pages taking turns in one stream: the schedule, preloading and skipping.

The next page is loaded while the current one is on screen (in a background tab of the same
window, see ``Pipeline.prepare``) and brought to the front when due, so a change costs one
frame: no blank, no spinner, no new LOAD on the device. A page that does not load is skipped
(``page_error``) and tried again next round.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol

from loguru import logger

from agent.errors import PagecastError
from agent.supervisor.session import SessionListener, StreamRequest
from agent.supervisor.state import EventName


class Stage(Protocol):
    """Where the pages are shown (the pipeline)."""

    async def prepare(self, url: str) -> None:
        """Load ``url`` out of sight; raises PagecastError (PAGE_LOAD_FAILED)."""

    async def show_prepared(self) -> None:
        """Bring the prepared page to the front in one frame; raises PagecastError."""

    async def reload(self) -> None:
        """Load the page on screen again; raises PagecastError (PAGE_LOAD_FAILED)."""

    async def title(self) -> str | None: ...


class Rotation:
    """Runs the schedule of ``request.pages``; page 0 is on screen when run() is called."""

    def __init__(
        self,
        request: StreamRequest,
        stage: Stage,
        on_show: Callable[[int, str], Awaitable[None]],
        on_error: Callable[[int, str, str], None],
    ) -> None:
        self._request = request
        self._stage = stage
        self._on_show = on_show
        self._on_error = on_error
        self._advance = asyncio.Event()

    def advance(self) -> None:
        """Show the next page now (``cmd/next``) instead of when it is due."""
        self._advance.set()

    async def run(self) -> None:
        index = 0
        pages = self._request.pages
        while True:
            shown_at = time.monotonic()
            upcoming = await self._prepare_after(index)
            await self._until_due(shown_at + self._request.page_seconds(index))
            if upcoming is None:
                continue  # nothing else loads: stay, and try them all again next round
            try:
                await self._stage.show_prepared()
            except PagecastError as exc:  # the page was healed under us: prepare again
                logger.warning("rotation: could not show page {}: {}", upcoming + 1, exc.message)
                continue
            index = upcoming
            logger.info("rotation: page {} of {} on screen", index + 1, len(pages))
            await self._on_show(index, pages[index].url)

    async def _prepare_after(self, index: int) -> int | None:
        """Load the first page after ``index`` that loads; its index, or None."""
        pages = self._request.pages
        for step in range(1, len(pages)):
            candidate = (index + step) % len(pages)
            url = pages[candidate].url
            try:
                await self._stage.prepare(url)
            except PagecastError as exc:
                logger.warning("rotation: skipping page {}: {}", candidate + 1, exc.message)
                self._on_error(candidate, url, exc.message)
                continue
            return candidate
        return None

    async def _until_due(self, due: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, due - time.monotonic())):
                await self._advance.wait()
        self._advance.clear()


class Showing:
    """A session's page work beside the stream: its rotation and reloads, each a task that
    stops with the session or when the session switches to another request."""

    def __init__(self, stage: Stage, listener: SessionListener) -> None:
        self._stage = stage
        self._listener = listener
        self._rotation: Rotation | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def begin(self, request: StreamRequest) -> None:
        """Start the rotation of ``request`` (its first page is on screen), if it has one."""
        if len(request.pages) > 1:
            self._rotation = Rotation(request, self._stage, self._shown, self._failed)
            self._spawn(self._rotation.run(), "rotation")

    async def end(self) -> None:
        self._rotation = None
        tasks, self._tasks = self._tasks, set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def advance(self) -> bool:
        if self._rotation is None:
            return False
        self._rotation.advance()
        return True

    def reload(self) -> None:
        self._spawn(self._reload(), "page-reload")

    async def _reload(self) -> None:
        try:
            await self._stage.reload()
        except PagecastError as exc:
            # The page keeper (agent/stream/page_keeper.py) saw it fail: it reports it
            # (page_error, waiting) and loads the page again until it answers.
            logger.warning("reload failed: {}", exc.message)
            return
        logger.info("page reloaded")
        self._listener.set_title(await self._stage.title())

    async def _shown(self, index: int, url: str) -> None:
        self._listener.set_page(index, url)
        self._listener.set_title(await self._stage.title())

    def _failed(self, index: int, url: str, reason: str) -> None:
        self._listener.event(EventName.PAGE_ERROR, url=url, index=index, reason=reason)

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.opt(exception=task.exception()).error("{} failed", task.get_name())
