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


# Playwright's words when a navigation that was under way commits after ours began.
_INTERRUPTED = "interrupted by another navigation"
# Each stale navigation can interrupt ours at most once; more than a few means a page that
# keeps navigating by itself, which is then reported like any other load failure.
_INTERRUPTIONS = 3


async def load(page: Page, url: str, timeout_s: float) -> None:
    """Navigate and wait for the ``load`` event; raise PAGE_LOAD_FAILED with the reason."""
    for attempt in range(_INTERRUPTIONS + 1):
        try:
            response = await page.goto(url, wait_until="load", timeout=timeout_s * 1000)
            break
        except PlaywrightTimeoutError:
            raise _failed(url, f"timed out after {timeout_s:g}s") from None
        except PlaywrightError as exc:
            # A cancelled switch cannot call back the navigation it asked Chromium for: when
            # that one commits after ours started, Playwright reports ours as interrupted.
            # Ours is the latest wish, so it goes again; it is not the page's fault.
            if _INTERRUPTED not in exc.message or attempt == _INTERRUPTIONS:
                raise _failed(url, describe(exc.message)) from None
    if response is not None and response.status >= 400:
        reason = f"HTTP {response.status} {response.status_text}".strip()
        raise _failed(url, reason)
    # "load" can come before the first paint; two animation frames later the page is on
    # screen, so the capture does not open on an empty window.
    # A page that navigated away meanwhile is painting something anyway.
    with contextlib.suppress(PlaywrightError):
        await page.evaluate(_PAINTED)


_PAINTED = "new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))"


def describe(message: str) -> str:
    match = re.search(r"net::(ERR_[A-Z_]+)", message)
    if match is None:
        return message.splitlines()[0] if message else "unknown error"
    code = match.group(1)
    return f"{_NET_ERRORS.get(code, code.removeprefix('ERR_').replace('_', ' ').lower())} ({code})"


def _failed(url: str, reason: str) -> PagecastError:
    return PagecastError(ErrorCode.PAGE_LOAD_FAILED, f"{url}: {reason}")
