"""Loading a page and telling the user, in one phrase, why it did not load."""

from __future__ import annotations

import contextlib
import re

from playwright.async_api import Error as PlaywrightError
from playwright.async_api import Page
from playwright.async_api import TimeoutError as PlaywrightTimeoutError

from agent.errors import ErrorCode, PagecastError

_NET_ERRORS = {
    "ERR_NAME_NOT_RESOLVED": "DNS lookup failed",
    "ERR_NAME_RESOLUTION_FAILED": "DNS lookup failed",
    "ERR_CONNECTION_REFUSED": "connection refused",
    "ERR_CONNECTION_RESET": "connection reset",
    "ERR_CONNECTION_TIMED_OUT": "connection timed out",
    "ERR_ADDRESS_UNREACHABLE": "host unreachable",
    "ERR_INTERNET_DISCONNECTED": "network unreachable",
    "ERR_CERT_AUTHORITY_INVALID": "TLS certificate not trusted",
    "ERR_CERT_COMMON_NAME_INVALID": "TLS certificate does not match the host",
    "ERR_SSL_PROTOCOL_ERROR": "TLS handshake failed",
    "ERR_INVALID_AUTH_CREDENTIALS": "HTTP authentication failed",
}


# Playwright's words when another navigation commits in the frame after ours began.
_INTERRUPTED = re.compile(r'interrupted by another navigation to "(.*)"')
# Each stale navigation can interrupt ours at most once; more than a few means a page that
# keeps navigating by itself, which is then reported like any other load failure.
_INTERRUPTIONS = 5
# The HTTP status of the document on screen (Navigation Timing), when no response is at hand.
_STATUS = "performance.getEntriesByType('navigation')[0]?.responseStatus || null"


async def load(page: Page, url: str, timeout_s: float) -> None:
    """Navigate and wait for the ``load`` event; raise PAGE_LOAD_FAILED with the reason."""
    try:
        status = await _go(page, url, timeout_s)
    except PlaywrightTimeoutError:
        raise _failed(url, f"timed out after {timeout_s:g}s") from None
    except PlaywrightError as exc:
        raise _failed(url, describe(exc.message)) from None
    if status is not None and status[0] >= 400:
        raise _failed(url, f"HTTP {status[0]} {status[1]}".strip())
    # "load" can come before the first paint; two animation frames later the page is on
    # screen, so the capture does not open on an empty window.
    # A page that navigated away meanwhile is painting something anyway.
    with contextlib.suppress(PlaywrightError):
        await page.evaluate(_PAINTED)


async def _go(page: Page, url: str, timeout_s: float) -> tuple[int, str] | None:
    """Navigate until the document of ``url`` has loaded; its HTTP status and status text.

    A cancelled switch cannot call back the navigation it asked Chromium for, and when that
    one commits after ours began, Playwright reports ours as interrupted, although it is the
    latest wish and may well go on. Interrupted by another URL: go again. By the same URL (an
    earlier go of ours committed late): that document is ours, wait for its ``load``.
    """
    for _ in range(_INTERRUPTIONS):
        try:
            response = await page.goto(url, wait_until="load", timeout=timeout_s * 1000)
        except PlaywrightError as exc:
            interrupted = _INTERRUPTED.search(exc.message)
            if interrupted is None or isinstance(exc, PlaywrightTimeoutError):
                raise
            if interrupted.group(1).rstrip("/") == url.rstrip("/"):
                try:
                    return await _loaded(page, timeout_s)
                except PlaywrightTimeoutError:
                    raise
                except PlaywrightError:
                    pass  # yet another navigation committed meanwhile
            continue
        return (response.status, response.status_text) if response is not None else None
    raise PlaywrightError(f"navigation to {url} interrupted {_INTERRUPTIONS} times")


async def _loaded(page: Page, timeout_s: float) -> tuple[int, str] | None:
    """The status of the document that committed, once it has loaded."""
    await page.wait_for_load_state("load", timeout=timeout_s * 1000)
    status = await page.evaluate(_STATUS)
    return (int(status), "") if status else None


_PAINTED = "new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))"


def describe(message: str) -> str:
    match = re.search(r"net::(ERR_[A-Z_]+)", message)
    if match is None:
        return message.splitlines()[0] if message else "unknown error"
    code = match.group(1)
    return f"{_NET_ERRORS.get(code, code.removeprefix('ERR_').replace('_', ' ').lower())} ({code})"


def _failed(url: str, reason: str) -> PagecastError:
    return PagecastError(ErrorCode.PAGE_LOAD_FAILED, f"{url}: {reason}")
