"""The display and the browser on it, kept warm between sessions and healed when they die."""

from __future__ import annotations

import asyncio
import time

from loguru import logger
from playwright.async_api import Playwright

from agent.config import AuthProfile, BrowserSettings
from agent.stream.browser import Browser, BrowserPage, Geometry
from agent.stream.display import Display


class Screen:
    """Xvfb plus Chromium at one geometry."""

    def __init__(self, playwright: Playwright, settings: BrowserSettings, geometry: Geometry):
        self._playwright = playwright
        self._settings = settings
        self.geometry = geometry
        self.display = Display(geometry.width, geometry.height)
        self.browser: Browser | None = None
        self._launched_at = time.monotonic()

    @property
    def alive(self) -> bool:
        return self.display.alive and self.browser is not None and self.browser.alive

    @property
    def browser_age_s(self) -> float:
        return time.monotonic() - self._launched_at

    async def new_page(self, profile: AuthProfile | None) -> BrowserPage:
        """A page in a fresh context. None is kept open between sessions: an idle renderer
        costs 60-80 MB PSS, and opening one costs a start a few tens of milliseconds."""
        if self.browser is None:
            raise RuntimeError("screen not started")
        return await self.browser.new_page(profile)

    async def start(self) -> None:
        try:
            await self.display.start()
            await self.restart_browser()
        except BaseException:
            await self.close()
            raise

    async def restart_browser(self) -> Browser:
        """A new Chromium on the same display (after a crash); the display keeps running."""
        if self.browser is not None:
            await self.browser.close()
        self.browser = Browser(self._playwright, self._settings, self.display.name, self.geometry)
        await self.browser.launch()
        self._launched_at = time.monotonic()
        return self.browser

    async def close(self) -> None:
        if self.browser is not None:
            await self.browser.close()
            self.browser = None
        await self.display.stop()


class ScreenKeeper:
    """Hands the one screen to one session at a time; keeps it warm when configured."""

    def __init__(self, playwright: Playwright, settings: BrowserSettings) -> None:
        self._playwright = playwright
        self._settings = settings
        self._screen: Screen | None = None
        self._lock = asyncio.Lock()
        self._in_use = asyncio.Lock()

    @property
    def current(self) -> Screen | None:
        return self._screen

    async def warm(self, geometry: Geometry) -> None:
        """Start a screen ahead of the first session (``browser.keep_warm``)."""
        async with self._lock:
            if self._in_use.locked():
                return  # a session took over meanwhile; its geometry decides
            await self._ensure(geometry)

    async def acquire(self, geometry: Geometry) -> Screen:
        """A live screen at ``geometry`` for exclusive use until release()."""
        await self._in_use.acquire()
        try:
            async with self._lock:
                return await self._ensure(geometry)
        except BaseException:
            self._in_use.release()
            raise

    async def replace(self, geometry: Geometry) -> Screen:
        """A completely new screen for the current holder (its display died)."""
        async with self._lock:
            await self._close_current()
            return await self._ensure(geometry)

    async def fresh(self, geometry: Geometry) -> Screen:
        """A new screen beside the current one, for the holder to move over to (adopt())."""
        screen = Screen(self._playwright, self._settings, geometry)
        await screen.start()
        return screen

    async def adopt(self, screen: Screen) -> None:
        """Make ``screen`` (from fresh()) the current one and close the one it replaces."""
        async with self._lock:
            old, self._screen = self._screen, screen
            if old is not None and old is not screen:
                await old.close()

    async def release(self) -> None:
        """Hand the screen back: kept warm, or closed."""
        try:
            async with self._lock:
                if not self._settings.keep_warm:
                    await self._close_current()
        finally:
            self._in_use.release()

    async def close(self) -> None:
        async with self._lock:
            await self._close_current()

    async def _ensure(self, geometry: Geometry) -> Screen:
        screen = self._screen
        if screen is not None and screen.geometry == geometry and screen.display.alive:
            if screen.browser is None or not screen.browser.alive:
                logger.info("Chromium is gone; starting it again")
                await screen.restart_browser()
            elif self._due_for_recycling(screen):
                # Nobody watches a warm browser: a new one costs no frame.
                logger.info("recycling the warm browser")
                await screen.restart_browser()
            return screen
        await self._close_current()
        screen = Screen(self._playwright, self._settings, geometry)
        await screen.start()
        self._screen = screen
        return screen

    def _due_for_recycling(self, screen: Screen) -> bool:
        after_h = self._settings.recycle_after_h
        return after_h is not None and screen.browser_age_s > after_h * 3600

    async def _close_current(self) -> None:
        if self._screen is not None:
            screen, self._screen = self._screen, None
            await screen.close()
