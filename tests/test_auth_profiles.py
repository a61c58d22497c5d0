"""Auth profiles stay on their origin: scheme, host *and port*, in a real Chromium.

Browsers scope a cookie to its host, so a cookie for ``http://127.0.0.1:A`` would also go to
``http://127.0.0.1:B``. Two real HTTP servers on two ports of one address show whether the
profile's credentials reach only the origin they were given for.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from playwright.async_api import async_playwright
from pydantic import ValidationError
from support.loopback import serving
from support.streaming import until, until_async

from agent.config import AuthProfile, BrowserSettings
from agent.stream.browser import Geometry
from agent.stream.screen import Screen

pytestmark = pytest.mark.timeout(120)

COOKIE_SECRET = "cookie-secret-1"
HTTP_ONLY_SECRET = "http-only-secret-2"
HEADER_SECRET = "header-secret-3"
PIXEL = bytes.fromhex(
    "47494638396101000100800000000000ffffff21f90401000000002c000000000100010000020144003b"
)


@dataclass
class Seen:
    """What one server received: (path, Cookie header, X-Token header) per request."""

    requests: list[tuple[str, str | None, str | None]] = field(default_factory=list)

    def of(self, path: str) -> list[tuple[str, str | None, str | None]]:
        return [r for r in self.requests if r[0] == path]


@contextlib.asynccontextmanager
async def http_server(page: str = "") -> AsyncIterator[tuple[str, Seen]]:
    """A server on a free port of 127.0.0.1: ``/`` is ``page``, ``*.gif`` a pixel."""
    seen = Seen()

    async def handle(request: web.Request) -> web.Response:
        seen.requests.append(
            (request.path, request.headers.get("Cookie"), request.headers.get("X-Token"))
        )
        if request.path.endswith(".gif"):
            return web.Response(body=PIXEL, content_type="image/gif")
        return web.Response(text=page, content_type="text/html")

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    async with serving(app) as port:
        yield f"http://127.0.0.1:{port}", seen


def embedding(other: str) -> str:
    """A page that loads a pixel from its own origin and one from ``other``, then reports."""
    return f"""<!doctype html><html><body>
<img id="own" src="/own.gif"><img id="other" src="{other}/px.gif">
<script>
addEventListener('load', () => {{ document.title = JSON.stringify({{cookie: document.cookie}}); }});
</script></body></html>"""


def test_a_secure_cookie_needs_an_https_origin() -> None:
    """Bound to the origin's scheme, Chromium would refuse it at the first start: say so now."""
    cookie = {"name": "session", "value": COOKIE_SECRET, "secure": True}
    with pytest.raises(ValidationError, match=r"secure cookies \['session'\] need an https"):
        AuthProfile(origin="http://nas.lan:8123", cookies=[cookie])
    assert AuthProfile(origin="https://nas.lan:8123", cookies=[cookie]).cookies[0].secure


async def test_profile_credentials_reach_their_origin_and_not_another_port() -> None:
    async with (
        http_server() as (other, other_seen),
        http_server(embedding(other)) as (origin, seen),
    ):
        profile = AuthProfile(
            origin=origin,
            cookies=[
                {"name": "session", "value": COOKIE_SECRET},
                {"name": "token", "value": HTTP_ONLY_SECRET, "http_only": True},
            ],
            headers={"X-Token": HEADER_SECRET},
        )
        async with async_playwright() as playwright:
            screen = Screen(playwright, BrowserSettings(), Geometry(320, 240, 1.0, 10))
            await screen.start()
            try:
                page = await screen.new_page(profile)
                await page.page.goto(origin + "/")
                title = await until_async(page.title, within=30)
                await until(lambda: other_seen.of("/px.gif") and seen.of("/own.gif"))
            finally:
                await screen.close()

    # The origin gets every credential, on the page and on its subresources.
    for path in ("/", "/own.gif"):
        ((_, cookie, token),) = seen.of(path)
        assert cookie is not None
        assert sorted(cookie.split("; ")) == [
            f"session={COOKIE_SECRET}",
            f"token={HTTP_ONLY_SECRET}",
        ]
        assert token == HEADER_SECRET
    # The same host on another port gets none.
    ((_, cookie, token),) = other_seen.of("/px.gif")
    assert (cookie, token) == (None, None)
    # The page reads its cookies as usual, except the httpOnly one.
    assert json.loads(title) == {"cookie": f"session={COOKIE_SECRET}"}
