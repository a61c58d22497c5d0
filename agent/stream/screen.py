"""The display and the browser on it, kept warm between sessions and healed when they die."""

from __future__ import annotations

import asyncio

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
        self._spare: BrowserPage | None = None

    @property
    def alive(self) -> bool:
        return self.display.alive and self.browser is not None and self.browser.alive

    async def prepare_spare(self) -> None:
        """Open a fresh context and fullscreen page now, for the next session without auth.

        Only while no session streams: the new window opens on top and would be captured.
        """
        if self._spare is None and self.browser is not None and self.browser.alive:
            self._spare = await self.browser.new_page(None)

    async def take_page(self, profile: AuthProfile | None) -> BrowserPage:
        """A page in a fresh context: the spare one if it fits, else a new one."""
        spare, self._spare = self._spare, None
        if spare is not None and profile is None and spare.alive:
            return spare
        if spare is not None:
            await spare.close()
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
        self._spare = None
        if self.browser is not None:
            await self.browser.close()
        self.browser = Browser(self._playwright, self._settings, self.display.name, self.geometry)
        await self.browser.launch()
        return self.browser

    async def close(self) -> None:
        self._spare = None
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
            screen = await self._ensure(geometry)
            if not self._in_use.locked():  # a session may have taken the screen meanwhile
                await screen.prepare_spare()

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

    async def release(self) -> None:
        try:
            async with self._lock:
                if not self._settings.keep_warm:
                    await self._close_current()
                elif self._screen is not None:
                    await self._screen.prepare_spare()
        except Exception as exc:
            logger.warning("could not keep the browser warm: {}", exc)
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
            return screen
        await self._close_current()
        screen = Screen(self._playwright, self._settings, geometry)
        await screen.start()
        self._screen = screen
        return screen

    async def _close_current(self) -> None:
        if self._screen is not None:
            screen, self._screen = self._screen, None
            await screen.close()
