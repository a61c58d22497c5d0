"""Glass-to-glass latency, measured the way a viewer sees it.

A clock page paints ``Date.now()`` as 32 black/white blocks (and their inverse, as a check)
on every animation frame. A real player (hls.js, or Shaka Player + mux.js, default settings)
in headless Chromium, on another origin than the stream, plays the stream; for every frame it
presents (``requestVideoFrameCallback``) it reads the blocks back and compares them with its
own clock. Both Chromiums run on this machine, so they share the clock.

The players come from npm, pinned, installed into ``bench/.cache`` (ignored by git).
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from playwright.async_api import Browser, async_playwright

CACHE = Path(__file__).resolve().parent / ".cache"
PLAYER_PACKAGES = ("hls.js@1.7.4", "shaka-player@5.2.12", "mux.js@7.1.0")
_SCRIPTS = {
    "hls.js": "hls.js/dist/hls.min.js",
    "mux.js": "mux.js/dist/mux.min.js",
    "shaka.js": "shaka-player/dist/shaka-player.compiled.js",
}
PLAYERS = ("shaka", "hls.js")

CLOCK_PAGE = """<!doctype html><html><head><title>clock</title><style>
html,body{margin:0;height:100%;overflow:hidden;background:#808080}</style></head><body>
<canvas id="c" width="1280" height="80" style="position:absolute;left:0;top:0"></canvas>
<script>
const ctx = document.getElementById('c').getContext('2d');
function paint() {
  const t = Date.now() % 4294967296;
  for (let i = 0; i < 32; i++) {
    const bit = Math.floor(t / 2 ** i) % 2;
    ctx.fillStyle = bit ? '#fff' : '#000'; ctx.fillRect(i * 40, 0, 40, 40);
    ctx.fillStyle = bit ? '#000' : '#fff'; ctx.fillRect(i * 40, 40, 40, 40);
  }
  requestAnimationFrame(paint);
}
requestAnimationFrame(paint);
</script></body></html>"""

PLAYER_PAGE = """<!doctype html><html><head><title>player</title>
<script src="/lib/mux.js"></script><script src="/lib/hls.js"></script>
<script src="/lib/shaka.js"></script></head><body>
<video id="v" muted autoplay playsinline width="640" height="360"></video>
<script>
const params = new URLSearchParams(location.search);
const video = document.getElementById('v');
const canvas = document.createElement('canvas');
const ctx = canvas.getContext('2d', {willReadFrequently: true});
window.samples = []; window.stalls = 0; window.errors = []; window.playing = false;
window.behinds = [];
setInterval(() => { const b = window.behind && window.behind();
                    if (window.playing && Number.isFinite(b)) window.behinds.push(b); }, 250);
video.addEventListener('playing', () => { window.playing = true; });
video.addEventListener('waiting', () => { if (window.playing) window.stalls++; });
function decode() {
  const w = video.videoWidth, h = video.videoHeight;
  if (!w) return null;
  const sx = w / 1280, sy = h / 720;
  canvas.width = Math.ceil(1280 * sx); canvas.height = Math.ceil(80 * sy);
  ctx.drawImage(video, 0, 0, w, h);
  const px = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
  const lum = (x, y) => { const i = (Math.round(y * sy) * canvas.width + Math.round(x * sx)) * 4;
                          return px[i] + px[i + 1] + px[i + 2]; };
  let t = 0;
  for (let i = 0; i < 32; i++) {
    const top = lum(i * 40 + 20, 20) > 384, bottom = lum(i * 40 + 20, 60) > 384;
    if (top === bottom) return null;  // not the clock, or a smeared picture
    if (top) t += 2 ** i;
  }
  return t;
}
function onFrame() {
  const shown = decode();
  if (shown !== null) {
    const now = Date.now() % 4294967296;
    window.samples.push(((now - shown) % 4294967296 + 4294967296) % 4294967296);
  }
  video.requestVideoFrameCallback(onFrame);
}
video.requestVideoFrameCallback(onFrame);
const src = params.get('src');
if (params.get('player') === 'hls.js') {
  const hls = new Hls();
  window.behind = () => hls.latency;
  hls.on(Hls.Events.ERROR, (_, d) => { if (d.fatal) window.errors.push(d.details); });
  hls.loadSource(src); hls.attachMedia(video);
} else {
  shaka.polyfill.installAll();
  const player = new shaka.Player();
  window.behind = () => player.seekRange().end - video.currentTime;
  player.addEventListener('error', (e) => window.errors.push(String(e.detail.code)));
  player.attach(video).then(() => player.load(src))
    .catch((e) => window.errors.push(String(e.code || e)));
}
video.play().catch(() => {});
</script></body></html>"""


@dataclass(frozen=True, slots=True)
class Latency:
    player: str
    median_s: float | None
    p90_s: float | None
    samples: int
    stalls: int
    errors: tuple[str, ...]
    # How far the player stays behind the newest listed media (its own choice).
    behind_edge_s: float | None = None

    def cell(self) -> str:
        if self.median_s is None:
            return f"no frames ({', '.join(self.errors) or 'no clock seen'})"
        stalls = f", {self.stalls} stalls" if self.stalls else ""
        return f"{self.median_s:.2f} s (p90 {self.p90_s:.2f}{stalls})"


def ensure_players() -> None:
    """npm-install the pinned players into bench/.cache once."""
    if all((CACHE / "node_modules" / path).exists() for path in _SCRIPTS.values()):
        return
    CACHE.mkdir(exist_ok=True)
    subprocess.run(
        ["npm", "install", "--no-audit", "--no-fund", "--prefix", str(CACHE), *PLAYER_PACKAGES],
        check=True,
        capture_output=True,
    )


@contextlib.asynccontextmanager
async def served_pages() -> AsyncIterator[tuple[str, str]]:
    """(clock page URL, player page origin): two servers, so the player is cross-origin."""

    async def clock(_request: web.Request) -> web.Response:
        return web.Response(text=CLOCK_PAGE, content_type="text/html")

    async def player(_request: web.Request) -> web.Response:
        return web.Response(text=PLAYER_PAGE, content_type="text/html")

    async def lib(request: web.Request) -> web.FileResponse:
        return web.FileResponse(CACHE / "node_modules" / _SCRIPTS[request.match_info["name"]])

    clock_app, player_app = web.Application(), web.Application()
    clock_app.router.add_get("/clock", clock)
    player_app.router.add_get("/player", player)
    player_app.router.add_get("/lib/{name}", lib)
    runners = [web.AppRunner(clock_app), web.AppRunner(player_app)]
    origins = []
    try:
        for runner in runners:
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            origins.append(f"http://127.0.0.1:{runner.addresses[0][1]}")
        yield origins[0] + "/clock", origins[1]
    finally:
        for runner in runners:
            await runner.cleanup()


@contextlib.asynccontextmanager
async def viewer(executable: str) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=executable,
            args=["--autoplay-policy=no-user-gesture-required", "--no-sandbox"],
        )
        try:
            yield browser
        finally:
            await browser.close()


async def measure(
    browser: Browser, player_origin: str, stream_url: str, player: str, *, warmup: float,
    seconds: float,
) -> Latency:  # fmt: skip
    """Play ``stream_url`` for warmup + seconds; latency of the frames shown after warmup."""
    page = await browser.new_page()
    try:
        await page.goto(f"{player_origin}/player?player={player}&src={stream_url}")
        await asyncio.sleep(warmup)
        await page.evaluate("window.samples = []; window.stalls = 0; window.behinds = []")
        await asyncio.sleep(seconds)
        samples = [s / 1000 for s in await page.evaluate("window.samples")]
        stalls = int(await page.evaluate("window.stalls"))
        errors = tuple(await page.evaluate("window.errors"))
        behinds = await page.evaluate("window.behinds")
    finally:
        await page.close()
    behind = statistics.median(behinds) if behinds else None
    if not samples:
        return Latency(player, None, None, 0, stalls, errors, behind)
    samples.sort()
    p90 = samples[int(len(samples) * 0.9) - 1] if len(samples) >= 10 else samples[-1]
    median = statistics.median(samples)
    return Latency(player, median, p90, len(samples), stalls, errors, behind)


async def measure_players(
    browser: Browser, player_origin: str, stream_url: str, *, warmup: float, seconds: float
) -> dict[str, Latency]:
    """Both players at once, on the same stream (each in its own page)."""
    results = await asyncio.gather(
        *(
            measure(browser, player_origin, stream_url, p, warmup=warmup, seconds=seconds)
            for p in PLAYERS
        )
    )
    return {r.player: r for r in results}
