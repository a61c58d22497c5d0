"""Keeping the wished page on screen: retry a page that did not load, reload it periodically.

A page whose server is down (connection refused, DNS, HTTP >= 500, Chromium's error page) is
not a reason to end a stream that nobody is waiting to hear about: a resumed wish, a self-heal
or a periodic reload whose load fails keeps the stream running on Chromium's error page, says
``waiting``/``page_unreachable``, and loads the page again with backoff until it answers.
Only a start command's own first load answers PAGE_LOAD_FAILED (the pipeline raises it).

Reloads in Chromium back off to a minute; between them a plain HTTP request asks every few
seconds whether the server answers at all, so that a page whose server comes back is on
screen within seconds, not up to a minute later.
"""

from __future__ import annotations

import asyncio
import math
import time

import aiohttp
from loguru import logger

from agent.errors import PagecastError
from agent.retry import Backoff
from agent.stream.pipeline import Pipeline
from agent.supervisor.session import SessionListener
from agent.supervisor.state import EventName

PAGE_UNREACHABLE = "page_unreachable"
_RETRY_MIN_S = 1.0
_RETRY_MAX_S = 60.0
# How often the keeper looks at the pipeline's page facts (cheap: no I/O).
_TICK_S = 0.25
# How often a server that does not answer is asked again, and how long it may take.
_PROBE_EVERY_S = 2.0
_PROBE_TIMEOUT_S = 5.0


class PageKeeper:
    def __init__(
        self, pipeline: Pipeline, listener: SessionListener, reload_every_s: float | None
    ) -> None:
        self._pipeline = pipeline
        self._listener = listener
        self._reload_every_s = reload_every_s or math.inf
        self._backoff = Backoff(_RETRY_MIN_S, _RETRY_MAX_S)
        self._failing_since: float | None = None
        self._next_load_at = time.monotonic() + self._reload_every_s
        # While failing: when to ask the server next, and whether it did not answer last time.
        self._next_probe_at = 0.0
        self._server_down = False

    @property
    def unreachable(self) -> bool:
        return self._failing_since is not None

    def note(self) -> None:
        """Report a page that stopped or started showing; plan the next load accordingly.

        Call after every load (the keeper's own, a heal's, a switch's): it compares the
        pipeline's ``page_error`` with what it reported last.
        """
        if self._pipeline.busy:
            return  # e.g. a failed switch going back to the previous page: judge the outcome
        error, now = self._pipeline.page_error, time.monotonic()
        if error is not None and self._failing_since is None:
            self._failing_since = now
            self._next_load_at = now + self._backoff.next()
            self._next_probe_at, self._server_down = now + _PROBE_EVERY_S, False
            logger.warning("page unreachable ({}); loading it again until it answers", error)
            self._listener.set_waiting(PAGE_UNREACHABLE)
            self._listener.event(EventName.PAGE_ERROR, error=error)
        elif error is None and self._failing_since is not None:
            after_s = round(now - self._failing_since, 1)
            attempts = self._backoff.attempts
            self._failing_since = None
            self._backoff.reset()
            self._next_load_at = now + self._reload_every_s
            logger.info("page back after {} s", after_s)
            self._listener.set_waiting(None)
            self._listener.event(
                EventName.RECOVERED, reason=PAGE_UNREACHABLE, after_s=after_s, attempts=attempts
            )

    def loaded(self) -> None:
        """The page was just loaded by someone else (a switch): the period starts over."""
        if self._pipeline.page_error is None:
            self._next_load_at = time.monotonic() + self._reload_every_s
        self.note()

    async def run(self) -> None:
        while True:
            await asyncio.sleep(_TICK_S)
            self.note()
            if self._pipeline.parked:
                continue
            if time.monotonic() >= self._next_load_at or await self._server_is_back():
                await self._load()

    async def _server_is_back(self) -> bool:
        """While failing, every few seconds: True once a server that did not answer does.

        Only that change counts: a server that answers while its page still does not load
        (a 404, a page that times out) is left to the backoff, not reloaded every probe.
        """
        now = time.monotonic()
        if self._failing_since is None or now < self._next_probe_at:
            return False
        self._next_probe_at = now + _PROBE_EVERY_S
        answers = await _answers(self._pipeline.url)
        back = answers and self._server_down
        self._server_down = not answers
        if back:
            logger.info("the page's server answers again")
        return back

    async def _load(self) -> None:
        retry = self._failing_since is not None
        logger.debug("loading the page again" if retry else "periodic reload")
        try:
            await self._pipeline.reload()
        except PagecastError as exc:
            logger.debug("page still unreachable: {}", exc.message)
        except Exception as exc:
            # Whatever broke (a page closed underneath) is the watcher's to heal; the keeper
            # itself must go on.
            logger.warning("reloading the page failed: {}", exc)
        now = time.monotonic()
        if self._pipeline.page_error is None:
            self._next_load_at = now + self._reload_every_s
            if retry:
                self._listener.set_title(await self._pipeline.title())
        elif self._failing_since is not None:
            self._next_load_at = now + self._backoff.next()
        self.note()


async def _answers(url: str) -> bool:
    """Whether the page's server answers at all: any HTTP status below 500. Certificates are
    not checked: nothing of the answer is used, and a LAN dashboard's is often self-signed."""
    if not url.startswith(("http://", "https://")):
        return True  # nothing to ask: let the reload find out
    try:
        timeout = aiohttp.ClientTimeout(total=_PROBE_TIMEOUT_S)
        async with (
            aiohttp.ClientSession(timeout=timeout) as http,
            http.get(url, allow_redirects=False, ssl=False) as response,
        ):
            return response.status < 500
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return False
