"""Auth profiles: credentials bound to one origin, applied to a fresh browser context.

Nothing here logs a value; profiles are referred to by name only.
"""

from __future__ import annotations

import json
from typing import Any

from playwright.async_api import BrowserContext, Route

from agent.config import AuthProfile


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
    """Cookies, localStorage and headers of ``profile``, scoped to its origin."""
    if profile is None:
        return
    if profile.cookies:
        await context.add_cookies(
            [
                {
                    "name": cookie.name,
                    "value": cookie.value.get_secret_value(),
                    "url": profile.origin + cookie.path,
                    "httpOnly": cookie.http_only,
                    "secure": cookie.secure,
                }
                for cookie in profile.cookies
            ]
        )
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
