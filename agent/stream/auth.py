"""Auth profiles: credentials bound to one origin, applied to a fresh browser context.

"One origin" is scheme, host and port. Headers and basic credentials are scoped to it by
Playwright; cookies are not by default, because browsers scope a cookie to its host (RFC 6265):
``http://host:8123``'s cookie would also go to ``http://host:9000``. Chromium's scheme- and
port-bound cookies close that gap for cookies that carry the scheme and port they came from,
so the profile's cookies are set over CDP with both, in a browser launched with those
features (``ORIGIN_BOUND_COOKIES``). The page still sees its cookies the normal way
(``document.cookie`` unless ``http_only``, WebSockets, service workers).

Nothing here logs a value; profiles are referred to by name only.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

from playwright.async_api import BrowserContext, CDPSession, Route

from agent.config import AuthProfile

# Chromium features that bind a cookie to the scheme and port it came from (see
# agent/stream/features.py for how they reach the command line).
ORIGIN_BOUND_COOKIES = ("EnableSchemeBoundCookies", "EnablePortBoundCookies")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def context_options(profile: AuthProfile | None) -> dict[str, Any]:
    """Options for ``Browser.new_context`` (HTTP basic credentials, sent to the origin only)."""
    if profile is None or profile.basic is None:
        return {}
    return {
        "http_credentials": {
            "username": profile.basic.username,
            "password": profile.basic.password.get_secret_value(),
            "origin": profile.origin,
            "send": "unauthorized",
        }
    }


async def apply(context: BrowserContext, profile: AuthProfile | None) -> None:
    """localStorage and headers of ``profile``, scoped to its origin (before the first page)."""
    if profile is None:
        return
    if profile.local_storage:
        items = {key: value.get_secret_value() for key, value in profile.local_storage.items()}
        # Runs before the page's own scripts, so an app like Home Assistant finds its token.
        await context.add_init_script(
            "(() => {"
            f" if (location.origin !== {json.dumps(profile.origin)}) return;"
            f" const items = {json.dumps(items)};"
            " for (const [k, v] of Object.entries(items)) localStorage.setItem(k, v);"
            "})();"
        )
    if profile.headers:
        headers = {name: value.get_secret_value() for name, value in profile.headers.items()}

        async def add_headers(route: Route) -> None:
            await route.continue_(headers={**route.request.headers, **headers})

        # Only requests to the profile's origin are intercepted: the headers (tokens) must not
        # leak to third-party hosts the page loads from.
        await context.route(profile.origin + "/**", add_headers)


def _cookie_params(profile: AuthProfile) -> list[dict[str, Any]]:
    origin = urlsplit(profile.origin)
    port = origin.port or _DEFAULT_PORTS[origin.scheme]
    return [
        {
            "name": cookie.name,
            "value": cookie.value.get_secret_value(),
            "url": profile.origin + cookie.path,
            "path": cookie.path,
            "httpOnly": cookie.http_only,
            "secure": cookie.secure,
            # What makes it an origin's cookie rather than a host's (with ORIGIN_BOUND_COOKIES).
            "sourceScheme": "Secure" if origin.scheme == "https" else "NonSecure",
            "sourcePort": port,
        }
        for cookie in profile.cookies
    ]


async def add_cookies(cdp: CDPSession, profile: AuthProfile | None) -> None:
    """The profile's cookies, for its origin only, in the context of ``cdp``'s page."""
    if profile is not None and profile.cookies:
        await cdp.send("Network.setCookies", {"cookies": _cookie_params(profile)})
