"""Chromium, headed on our Xvfb, driven by Playwright; one fresh context per page session."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass

from loguru import logger
from playwright.async_api import Browser as PlaywrightBrowser
from playwright.async_api import BrowserContext, Page, Playwright

from agent.config import AuthProfile, BrowserSettings, QualityPreset
from agent.errors import ErrorCode, PagecastError
from agent.stream import auth, features
from agent.stream.process import start_owned

_LAUNCH_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class Geometry:
    """What a running browser window is fixed to: changing it means a new display and browser."""

    width: int
    height: int
    zoom: float
    fps: int

    @classmethod
    def of(cls, preset: QualityPreset) -> Geometry:
        return cls(preset.width, preset.height, preset.zoom, preset.fps)


def sandbox_enabled(settings: BrowserSettings) -> bool:
    # The sandbox needs user namespaces that root usually lacks, so "auto" means off for root.
    return settings.sandbox if settings.sandbox is not None else os.geteuid() != 0


# The network service runs in the browser process instead of a utility process of its own:
# a page on a wall display needs no isolation from a network crash (a crash heals the browser).
_IN_PROCESS_FEATURES = ("NetworkServiceInProcess2",)
# Nothing of the browser's UI is ever seen on a captured kiosk.
_UNSEEN_FEATURES = (
    "WebUIOmniboxPopup",
    "WebUIOmniboxAimPopup",
    "WebUIOmniboxFullPopup",
    "PreloadTopChromeWebUI",
    "SpareRendererForSitePerProcess",
)


def chromium_args(geometry: Geometry, settings: BrowserSettings) -> list[str]:
    return [
        "--kiosk",
        f"--window-size={geometry.width},{geometry.height}",
        "--window-position=0,0",
        "--hide-scrollbars",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-default-apps",
        "--disable-extensions",
        "--disable-sync",
        "--disable-translate",
        "--disable-session-crashed-bubble",
        "--noerrdialogs",
        "--password-store=basic",
        "--autoplay-policy=no-user-gesture-required",
        # A page on a TV is always "visible": never throttle its timers or rendering.
        "--disable-background-timer-throttling",
        "--disable-renderer-backgrounding",
        "--disable-backgrounding-occluded-windows",
        # Nobody sees browser UI on a captured kiosk: no renderers kept for the omnibox popup
        # (a WebUI page each new context's window preloads, ~30 MB PSS) or for tab search,
        # and no spare renderer process idling for a navigation that may never come.
        *features.merged(
            settings.extra_args,
            enable=(*auth.ORIGIN_BOUND_COOKIES, *_IN_PROCESS_FEATURES),
            disable=_UNSEEN_FEATURES,
        ),
    ]


class Browser:
    """One Chromium process on one display; each page gets its own context (no shared state)."""

    def __init__(
        self, playwright: Playwright, settings: BrowserSettings, display: str, geometry: Geometry
    ) -> None:
        self._playwright = playwright
        self._settings = settings
        self._display = display
        self.geometry = geometry
        self._browser: PlaywrightBrowser | None = None

    @property
    def alive(self) -> bool:
        return self._browser is not None and self._browser.is_connected()

    async def launch(self) -> None:
        launching = self._playwright.chromium.launch(
            executable_path=str(self._settings.executable),
            headless=False,
            chromium_sandbox=sandbox_enabled(self._settings),
            # Without this flag there is no "controlled by automated software" bar.
            ignore_default_args=["--enable-automation"],
            args=chromium_args(self.geometry, self._settings),
            env={**os.environ, "DISPLAY": self._display},
            timeout=_LAUNCH_TIMEOUT_S * 1000,
        )
        try:
            # Playwright's driver goes on launching when we stop waiting: a cancelled launch
            # would leave a Chromium that only Playwright's own exit ends, drawing on our display.
            self._browser = await start_owned(launching, _close_browser)
        except Exception as exc:
            raise launch_error(str(exc)) from exc
        logger.debug("Chromium {} up on {}", self._browser.version, self._display)

    async def new_page(self, profile: AuthProfile | None) -> BrowserPage:
        if self._browser is None or not self._browser.is_connected():
            raise PagecastError(ErrorCode.PIPELINE_FAILED, "Chromium is not running")
        context = await self._browser.new_context(no_viewport=True, **auth.context_options(profile))
        try:
            if self.geometry.zoom != 1:
                await context.add_init_script(_zoom_script(self.geometry.zoom))
            if self.geometry.fps < _DISPLAY_HZ:
                await context.add_init_script(_FRAME_LIMIT.replace("FPS", str(self.geometry.fps)))
            await auth.apply(context, profile)
            page = await context.new_page()
            cdp = await context.new_cdp_session(page)
            await auth.add_cookies(cdp, profile)
            # Windows of new contexts are normal windows with a toolbar even in kiosk mode;
            # fullscreen hides all browser UI and pins the window to (0,0).
            window = await cdp.send("Browser.getWindowForTarget")
            await cdp.send(
                "Browser.setWindowBounds",
                {"windowId": window["windowId"], "bounds": {"windowState": "fullscreen"}},
            )
            await cdp.detach()
        except BaseException:
            await _close_quietly(context)
            raise
        return BrowserPage(context, page)

    async def close(self) -> None:
        if self._browser is not None:
            browser, self._browser = self._browser, None
            await _close_browser(browser)


# What Chromium prints when its sandbox cannot make its namespaces (Docker's default seccomp
# profile without SYS_ADMIN, or a host that forbids unprivileged user namespaces).
_SANDBOX_BLOCKED = ("no usable sandbox", "failed to move to new namespace", "zygote could not fork")
SANDBOX_HELP = (
    "Chromium's sandbox cannot create its namespaces: in Docker add --cap-add SYS_ADMIN or "
    "--security-opt seccomp=docker/seccomp-chromium.json (README, Docker); elsewhere allow "
    "unprivileged user namespaces"
)


def launch_error(detail: str) -> PagecastError:
    """One line a user can act on instead of Chromium's kilobytes of hints, when we know it."""
    if any(marker in detail.lower() for marker in _SANDBOX_BLOCKED):
        logger.debug("Chromium's sandbox failed: {}", detail)
        return PagecastError(ErrorCode.PIPELINE_FAILED, SANDBOX_HELP)
    return PagecastError(ErrorCode.PIPELINE_FAILED, f"Chromium did not start: {detail}")


async def _close_browser(browser: PlaywrightBrowser) -> None:
    try:
        await asyncio.wait_for(browser.close(), 10)
    except Exception as exc:
        logger.debug("closing Chromium: {}", exc)


def _zoom_script(zoom: float) -> str:
    # CSS zoom on the root element, set before the page's first layout. Chromium's own
    # device-scale flag cannot be used: a fullscreen window then takes the screen's pixel
    # size as DIPs and overflows the capture area by the zoom factor.
    return _ZOOM_SCRIPT.replace("ZOOM", f"{zoom:g}")


# Chromium draws at the display's 60 Hz while ffmpeg samples only ``fps`` frames a second:
# pages animated from requestAnimationFrame (charts, canvas, clocks) get callbacks at the
# capture rate, so every other frame is neither computed nor painted. Timestamps stay real.
_DISPLAY_HZ = 60
_FRAME_LIMIT = """(() => {
  const interval = 1000 / FPS;
  const native = window.requestAnimationFrame.bind(window);
  let queue = new Map(), nextId = 1, pending = 0, last = -Infinity;
  const tick = (now) => {
    pending = 0;
    if (now - last < interval - 4) { pending = native(tick); return; }
    last = now;
    const due = queue; queue = new Map();
    for (const callback of due.values()) {
      try { callback(now); } catch (error) { setTimeout(() => { throw error; }); }
    }
  };
  window.requestAnimationFrame = (callback) => {
    const id = nextId++;
    queue.set(id, callback);
    if (!pending) pending = native(tick);
    return id;
  };
  window.cancelAnimationFrame = (id) => { queue.delete(id); };
})();"""

_ZOOM_SCRIPT = """(() => {
  const apply = () => {
    const root = document.documentElement;
    if (root) root.style.setProperty('zoom', 'ZOOM', 'important');
    return !!root;
  };
  if (!apply()) new MutationObserver((_, o) => { if (apply()) o.disconnect(); })
    .observe(document, {childList: true});
})();"""


class BrowserPage:
    """A page in its own context; notices renderer crashes."""

    def __init__(self, context: BrowserContext, page: Page) -> None:
        self.context = context
        self.page = page
        self.crashed = False
        page.on("crash", self._on_crash)

    def _on_crash(self, _page: Page) -> None:
        self.crashed = True

    @property
    def alive(self) -> bool:
        return not self.crashed and not self.page.is_closed()

    async def background_tab(self) -> Page:
        """Another tab of this page's window, opened behind it: nothing of it shows until its
        ``bring_to_front()``. It shares the context, so auth and init scripts apply to it."""
        cdp = await self.context.new_cdp_session(self.page)
        try:
            target = await cdp.send("Target.getTargetInfo")
            async with self.context.expect_page() as opened:
                await cdp.send(
                    "Target.createTarget",
                    {
                        "url": "about:blank",
                        "browserContextId": target["targetInfo"]["browserContextId"],
                        "background": True,
                    },
                )
            return await opened.value
        finally:
            await cdp.detach()

    async def bring_forward(self, tab: Page) -> Page:
        """Bring ``tab`` (from background_tab()) to the front: it becomes this page, and the
        page that was on screen, now behind it, is returned."""
        await tab.bring_to_front()
        behind, self.page = self.page, tab
        behind.remove_listener("crash", self._on_crash)
        tab.on("crash", self._on_crash)
        return behind

    async def title(self) -> str | None:
        try:
            return (await self.page.title()) or None
        except Exception:
            return None

    async def close(self) -> None:
        await _close_quietly(self.context)


async def _close_quietly(context: BrowserContext) -> None:
    try:
        await asyncio.wait_for(context.close(), 5)
    except Exception as exc:
        logger.debug("closing browser context: {}", exc)
