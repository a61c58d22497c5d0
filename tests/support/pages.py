"""A small local web server of test pages, so no test needs the internet.

Usage (sync or async tests alike; it runs in a thread)::

    with PageServer() as pages:
        url = pages.color("#ff0000")

or the ``page_server`` fixture (session-scoped): ``from support.pages import page_server``.

Pages:
- ``/color/<rrggbb>``   solid colour filling the window; title ``color <rrggbb>``
- ``/tall/<rrggbb>``    the same colour, 3000 px tall (a browser would show a scrollbar)
- ``/animated``         full-screen motion (moving blocks, a running clock) for CPU benchmarks
- ``/dashboard``        a mostly static dashboard (cards, numbers, a clock ticking each second)
- ``/flip/<rrggbb>/<rrggbb>``  the first colour, the second on the next load, and so on
                        (tells a reload from no reload)
- ``/status/<code>``    answers with that HTTP status (e.g. 404, 500)
- ``/slow/<seconds>``   answers after a delay (page-load timeouts)
- ``/size``           title ``<innerWidth>x<innerHeight>`` in CSS pixels (window size)
- ``/corner``          red, with a 100x100 CSS px green square in the bottom-right corner (zoom)
- ``/untitled``         a page without a title
- ``/whoami``           page whose title is JSON of what it received: cookie, headers it knows,
                        ``localStorage`` items, and basic-auth user (auth-profile tests)
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

_ANIMATED = """<!doctype html><html><head><title>animated</title><style>
html,body{margin:0;height:100%;overflow:hidden;background:#102040;font:48px sans-serif;color:#fff}
.b{position:absolute;width:160px;height:160px;border-radius:24px}
</style></head><body><div id="clock" style="position:absolute;left:40px;top:20px"></div>
<script>
const boxes = [];
for (let i = 0; i < 12; i++) {
  const d = document.createElement('div'); d.className = 'b';
  d.style.background = `hsl(${i * 30},80%,55%)`; document.body.appendChild(d); boxes.push(d);
}
function frame(t) {
  const w = innerWidth - 160, h = innerHeight - 160;
  boxes.forEach((d, i) => {
    const p = t / 1000 + i;
    d.style.transform = `translate(${(Math.sin(p * 0.9) + 1) / 2 * w}px,` +
                        `${(Math.cos(p * 1.3) + 1) / 2 * h}px) rotate(${p * 40}deg)`;
  });
  document.getElementById('clock').textContent = (t / 1000).toFixed(2);
  requestAnimationFrame(frame);
}
requestAnimationFrame(frame);
</script></body></html>"""

_DASHBOARD = """<!doctype html><html><head><title>dashboard</title><style>
html,body{margin:0;height:100%;overflow:hidden;background:#f3f4f6;font-family:sans-serif}
header{background:#03a9f4;color:#fff;font-size:28px;padding:16px 24px}
main{display:grid;grid-template-columns:repeat(4,1fr);gap:16px;padding:24px}
.card{background:#fff;border-radius:12px;padding:16px;box-shadow:0 1px 3px #0003}
.card h2{margin:0 0 8px;font-size:16px;color:#555}.card p{margin:0;font-size:40px}
</style></head><body><header>Home <span id="clock" style="float:right"></span></header><main>
CARDS</main><script>
function tick() { document.getElementById('clock').textContent =
  new Date().toLocaleTimeString(); }
tick(); setInterval(tick, 1000);
</script></body></html>"""

_CARDS = "".join(
    f'<div class="card"><h2>{name}</h2><p>{value}</p></div>'
    for name, value in [
        ("Living room", "21.5 °C"),
        ("Bedroom", "19.0 °C"),
        ("Outside", "7.2 °C"),
        ("Humidity", "48 %"),
        ("Power", "412 W"),
        ("Solar", "1.8 kW"),
        ("Front door", "Locked"),
        ("Garage", "Closed"),
    ]
)

_CORNER = """<!doctype html><html><head><title>corner</title></head>
<body style="margin:0;background:#f00;height:100vh"><div style="position:fixed;right:0;bottom:0;
width:100px;height:100px;background:#0f0"></div></body></html>"""

_SIZE = """<!doctype html><html><head><title>size</title></head><body><script>
const show = () => { document.title = innerWidth + 'x' + innerHeight; };
show(); addEventListener('resize', show);
</script></body></html>"""

_WHOAMI = """<!doctype html><html><head><title>whoami</title></head><body><script>
const seen = SEEN;
const storage = {};
for (let i = 0; i < localStorage.length; i++) {
  const k = localStorage.key(i); storage[k] = localStorage.getItem(k);
}
seen.localStorage = storage;
document.title = JSON.stringify(seen);
</script></body></html>"""


def color_page(rgb: str, height: str = "100vh") -> str:
    return (
        f"<!doctype html><html><head><title>color {rgb}</title></head>"
        f'<body style="margin:0;background:#{rgb};height:{height}"></body></html>'
    )


_FLIPS: dict[str, int] = {}  # loads per /flip/ path
_FLIPS_LOCK = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    server_version = "pagecast-test-pages"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if match := re.fullmatch(r"/color/([0-9a-fA-F]{6})", path):
            self._send(200, color_page(match.group(1)))
        elif match := re.fullmatch(r"/tall/([0-9a-fA-F]{6})", path):
            self._send(200, color_page(match.group(1), height="3000px"))
        elif match := re.fullmatch(r"/flip/([0-9a-fA-F]{6})/([0-9a-fA-F]{6})", path):
            with _FLIPS_LOCK:
                _FLIPS[path] = loads = _FLIPS.get(path, 0) + 1
            self._send(200, color_page(match.group(1 if loads % 2 else 2)))
        elif path == "/animated":
            self._send(200, _ANIMATED)
        elif path == "/dashboard":
            self._send(200, _DASHBOARD.replace("CARDS", _CARDS))
        elif match := re.fullmatch(r"/status/(\d{3})", path):
            code = int(match.group(1))
            self._send(code, f"<html><body><h1>{code}</h1></body></html>")
        elif match := re.fullmatch(r"/slow/(\d+(?:\.\d+)?)", path):
            time.sleep(float(match.group(1)))
            self._send(200, color_page("808080"))
        elif path == "/corner":
            self._send(200, _CORNER)
        elif path == "/size":
            self._send(200, _SIZE)
        elif path == "/untitled":
            self._send(200, "<!doctype html><html><body>no title</body></html>")
        elif path == "/whoami":
            self._whoami()
        else:
            self._send(404, "<html><body>not found</body></html>")

    def _whoami(self) -> None:
        auth = self.headers.get("Authorization", "")
        if self.server.require_basic and not auth.startswith("Basic "):  # type: ignore[attr-defined]
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="test"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        user = None
        if auth.startswith("Basic "):
            user = base64.b64decode(auth[6:]).decode().split(":", 1)[0]
        seen = {
            "cookie": self.headers.get("Cookie"),
            "x_token": self.headers.get("X-Token"),
            "basic_user": user,
        }
        body = _WHOAMI.replace("SEEN", json.dumps(seen).replace("</", "<\\/"))
        self._send(200, body)

    def _send(self, code: int, body: str) -> None:
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)


class PageServer:
    """The test pages on ``127.0.0.1:<free port>`` in a daemon thread."""

    def __init__(self, host: str = "127.0.0.1", *, require_basic: bool = False) -> None:
        self._require_basic = require_basic
        self._serve((host, 0))

    def _serve(self, address: tuple[str, int]) -> None:
        self._server = ThreadingHTTPServer(address, _Handler)
        self._server.daemon_threads = True
        self._server.require_basic = self._require_basic  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def down(self) -> None:
        """The server is gone: connections to its port are refused until up()."""
        self.close()

    def up(self) -> None:
        """Back on the same port, as a restarted server would be."""
        host, port = self._server.server_address[:2]
        self._serve((str(host), int(port)))
        self.start()

    @property
    def origin(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def url(self, path: str) -> str:
        return self.origin + path

    def color(self, rgb: str) -> str:
        return self.url(f"/color/{rgb.lstrip('#')}")

    def start(self) -> PageServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def __enter__(self) -> PageServer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.close()


@pytest.fixture(scope="session")
def page_server() -> Iterator[PageServer]:
    with PageServer() as server:
        yield server
