"""The fake device: Cast v2 over TLS on ``host:8009``, ``/setup/eureka_info`` on ``host:8008``.

State (the running app, the media session) belongs to the device and is shared by every
connection; changes are broadcast like a real receiver does. Each test gets its own 127.x.y.z
address, so the real ports can be used without clashes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from fakecast.player import HlsPlayer, PlaybackError, PlayerLog, StallPolicy
from fakecast.protocol import (
    NS_CONNECTION,
    NS_HEARTBEAT,
    NS_MEDIA,
    NS_RECEIVER,
    PLATFORM_ID,
    Frame,
    encode_frame,
    read_frame,
)
from fakecast.tls import server_context

MEDIA_RECEIVER = "CC1AD845"
BACKDROP = "E8C28D3C"  # the idle screen a receiver shows when nothing is cast
CAST_PORT = 8009
HTTP_PORT = 8008


def free_loopback_address() -> str:
    """A 127.x.y.z address whose cast and HTTP ports are free right now."""
    for _ in range(100):
        host = f"127.{random.randint(1, 254)}.{random.randint(0, 254)}.{random.randint(2, 254)}"
        try:
            for port in (CAST_PORT, HTTP_PORT):
                with socket.socket() as probe:
                    probe.bind((host, port))
        except OSError:
            continue
        return host
    raise RuntimeError("no free loopback address")


@dataclass
class App:
    app_id: str
    display_name: str
    session_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    transport_id: str = field(default_factory=lambda: f"web-{random.randint(1, 10**6)}")

    @property
    def idle_screen(self) -> bool:
        return self.app_id == BACKDROP

    def to_json(self) -> dict[str, Any]:
        namespaces = ["urn:x-cast:com.google.cast.sse"]
        if not self.idle_screen:
            namespaces = [NS_MEDIA, "urn:x-cast:com.google.cast.cac"]
        return {
            "appId": self.app_id,
            "displayName": self.display_name,
            "isIdleScreen": self.idle_screen,
            "namespaces": [{"name": name} for name in namespaces],
            "sessionId": self.session_id,
            "statusText": self.display_name,
            "transportId": self.transport_id,
        }


@dataclass
class Media:
    media_session_id: int
    media: dict[str, Any]
    player_state: str = "BUFFERING"
    idle_reason: str | None = None

    @property
    def content_id(self) -> str:
        return str(self.media.get("contentId", ""))

    def to_json(self) -> dict[str, Any]:
        status: dict[str, Any] = {
            "mediaSessionId": self.media_session_id,
            "playbackRate": 1,
            "playerState": self.player_state,
            "currentTime": 0,
            "supportedMediaCommands": 12303,
            "volume": {"level": 1, "muted": False},
            "media": self.media,
        }
        if self.idle_reason:
            status["idleReason"] = self.idle_reason
        return status


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.channels: set[str] = set()  # destinations this sender CONNECTed to

    def send(self, source: str, destination: str, namespace: str, data: dict[str, Any]) -> None:
        if not self.writer.is_closing():
            self.writer.write(encode_frame(source, destination, namespace, data))


class FakeCastDevice:
    """An async context manager; the knobs below make it misbehave like real devices do."""

    def __init__(
        self,
        name: str = "Fake TV",
        host: str | None = None,
        *,
        model: str = "Chromecast",
        stall: StallPolicy | None = None,
    ) -> None:
        self.name = name
        self.host = host or free_loopback_address()
        self.port = CAST_PORT
        self.model = model
        self.uuid = uuid.uuid4()
        self.stall = stall or StallPolicy()
        self.log = PlayerLog()
        self.loads: list[dict[str, Any]] = []  # every LOAD received from a sender
        self.launches: list[str] = []
        self.stops: list[str] = []  # "app" or "media", as senders asked
        self.answer_pings = True
        # False: receiver and media requests (LAUNCH, LOAD, STOP...) go unanswered, like a TV
        # that hangs; the connection and its pings stay up.
        self.answer_requests = True
        self.player_history: list[tuple[str, str | None]] = []  # (state, idle reason)
        self.accepted = 0  # TLS connections accepted: tells reuse from reconnects
        self.app: App | None = None
        self.media: Media | None = None
        # The device's own volume (RECEIVER_STATUS), set by SET_VOLUME or by its buttons.
        self.volume_level = 1.0
        self.muted = False
        self.volume_requests: list[dict[str, Any]] = []  # every SET_VOLUME's "volume"
        self._fail_next_load: int | None = None
        self._refuse_launch: str | None = None
        self._connections: set[_Connection] = set()
        self._serving: set[asyncio.Task[Any]] = set()
        self._server: asyncio.Server | None = None
        self._http_runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._player_task: asyncio.Task[None] | None = None
        self._media_ids = itertools.count(1)
        self._changed = asyncio.Event()

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> FakeCastDevice:
        self._http = aiohttp.ClientSession()
        await self._listen()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._go_down()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._http:
            await self._http.close()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, self.host, self.port, ssl=server_context(), reuse_address=True
        )
        app = web.Application()
        app.router.add_get("/setup/eureka_info", self._eureka_info)
        self._http_runner = web.AppRunner(app, access_log=None)
        await self._http_runner.setup()
        await web.TCPSite(self._http_runner, self.host, HTTP_PORT, reuse_address=True).start()

    async def _go_down(self) -> None:
        await self._stop_player()
        if self._server:
            self._server.close()
        for connection in list(self._connections):
            connection.writer.close()
        # Handlers end on the EOF; one cancelled later by the test's loop would log an error.
        await asyncio.gather(*self._serving, return_exceptions=True)
        if self._server:
            await self._server.wait_closed()
            self._server = None
        if self._http_runner:
            await self._http_runner.cleanup()
            self._http_runner = None

    # -- knobs -------------------------------------------------------------------------------

    def fail_next_load(self, code: int = 104) -> None:
        """Answer the next LOAD with LOAD_FAILED and this detailed error code."""
        self._fail_next_load = code

    def refuse_launch(self, reason: str | None = "NOT_ALLOWED") -> None:
        """Answer LAUNCH with LAUNCH_ERROR (None: launch again)."""
        self._refuse_launch = reason

    async def drop_connections(self) -> None:
        """The network blips: every sender connection is cut, the device keeps its state."""
        for connection in list(self._connections):
            connection.writer.close()

    async def reboot(self, down_s: float) -> None:
        """Gone for ``down_s`` seconds, then back with nothing running. Returns once back."""
        await self.go_away()
        await asyncio.sleep(down_s)
        await self.come_back(backdrop=False)

    async def go_away(self) -> None:
        """Switched off (or off the network): connections end, nothing answers any more."""
        await self._go_down()
        self.app = None
        self.media = None
        self._touch()

    async def come_back(self, *, backdrop: bool = True) -> None:
        """Switched on again, showing its idle screen (Backdrop) or, older devices, no app."""
        self.app = App(BACKDROP, "Backdrop") if backdrop else None
        await self._listen()
        self._touch()

    async def other_app_ends(self) -> None:
        """The other app (YouTube, a timer) is done: the device goes back to Backdrop."""
        await self._stop_player()
        self._end_app(broadcast=False)
        self.app = App(BACKDROP, "Backdrop")
        self._broadcast_receiver_status()

    @property
    def away(self) -> bool:
        return self._server is None

    async def close_app(self) -> None:
        """The receiver closes the app by itself (a Nest Hub's idle timeout)."""
        await self._stop_player()
        self._end_app()

    async def other_app(self, app_id: str = "233637DE", display_name: str = "YouTube") -> None:
        """Another sender launches a different app."""
        await self._stop_player()
        self._end_app(broadcast=False)
        self.app = App(app_id, display_name)
        self._broadcast_receiver_status()

    async def other_sender_load(self, url: str = "http://192.0.2.1/movie.mp4") -> None:
        """Another sender LOADs its own media into the running media receiver."""
        await self._stop_player()
        if self.app is None or self.app.app_id != MEDIA_RECEIVER:
            self._end_app(broadcast=False)
            self.app = App(MEDIA_RECEIVER, "Default Media Receiver")
            self._broadcast_receiver_status()
        media = {"contentId": url, "contentType": "video/mp4", "streamType": "BUFFERED"}
        self.media = Media(next(self._media_ids), media, player_state="PLAYING")
        self._broadcast_media_status()

    async def other_sender_stop(self) -> None:
        """Someone presses stop on their phone: the media goes IDLE (CANCELLED), the app stays."""
        await self._stop_player()
        if self.media is not None:
            self.media.player_state, self.media.idle_reason = "IDLE", "CANCELLED"
            self._broadcast_media_status()

    def press_volume(self, level: float | None = None, muted: bool | None = None) -> None:
        """Someone uses the remote (or another sender): the volume changes, everyone hears."""
        self._apply_volume({"level": level, "muted": muted})
        self._broadcast_receiver_status()

    def _apply_volume(self, volume: dict[str, Any]) -> None:
        if isinstance(volume.get("level"), int | float):
            self.volume_level = min(1.0, max(0.0, float(volume["level"])))
        if isinstance(volume.get("muted"), bool):
            self.muted = volume["muted"]

    # -- observations ------------------------------------------------------------------------

    @property
    def player_state(self) -> str | None:
        return self.media.player_state if self.media else None

    async def wait_for(self, predicate: Callable[[], bool], within_s: float) -> None:
        """Until ``predicate()`` holds after some state change; TimeoutError otherwise."""
        async with asyncio.timeout(within_s):
            while not predicate():
                self._changed.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.2):  # fetches change the log without a touch
                        await self._changed.wait()

    def _touch(self) -> None:
        self._changed.set()

    # -- HTTP ----------------------------------------------------------------------------------

    async def _eureka_info(self, _request: web.Request) -> web.Response:
        return web.json_response(
            {
                "name": self.name,
                "device_info": {
                    "name": self.name,
                    "model_name": self.model,
                    "manufacturer": "Google Inc.",
                    "ssdp_udn": str(self.uuid),
                    "capabilities": {"display_supported": True, "multizone_supported": False},
                },
            }
        )

    # -- Cast v2 -------------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = _Connection(reader, writer)
        self._connections.add(connection)
        self.accepted += 1
        serving = asyncio.current_task()
        assert serving is not None
        self._serving.add(serving)
        try:
            while True:
                frame = await read_frame(reader)
                self._handle(connection, frame)
        except (asyncio.IncompleteReadError, ConnectionError, ValueError, OSError):
            pass
        finally:
            self._serving.discard(serving)
            self._connections.discard(connection)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _handle(self, connection: _Connection, frame: Frame) -> None:
        kind = frame.data.get("type")
        if frame.namespace == NS_CONNECTION:
            if kind == "CONNECT":
                connection.channels.add(frame.destination_id)
            elif kind == "CLOSE":
                connection.channels.discard(frame.destination_id)
        elif frame.namespace == NS_HEARTBEAT:
            if kind == "PING" and self.answer_pings:
                connection.send(
                    frame.destination_id, frame.source_id, NS_HEARTBEAT, {"type": "PONG"}
                )
        elif not self.answer_requests:
            return
        elif frame.namespace == NS_RECEIVER:
            self._spawn(self._on_receiver(connection, frame))
        elif frame.namespace == NS_MEDIA:
            self._spawn(self._on_media(connection, frame))

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _on_receiver(self, connection: _Connection, frame: Frame) -> None:
        kind = frame.data.get("type")
        request_id = frame.data.get("requestId", 0)
        if kind == "LAUNCH":
            app_id = str(frame.data.get("appId"))
            self.launches.append(app_id)
            if self._refuse_launch:
                connection.send(
                    PLATFORM_ID,
                    frame.source_id,
                    NS_RECEIVER,
                    {
                        "type": "LAUNCH_ERROR",
                        "reason": self._refuse_launch,
                        "requestId": request_id,
                    },
                )
                return
            if self.app is None or self.app.app_id != app_id:
                await self._stop_player()
                self._end_app(broadcast=False)
                name = "Default Media Receiver" if app_id == MEDIA_RECEIVER else app_id
                self.app = App(app_id, name)
        elif kind == "STOP":
            self.stops.append("app")
            await self._stop_player()
            self._end_app(broadcast=False)
        elif kind == "SET_VOLUME":
            volume = frame.data.get("volume")
            if not isinstance(volume, dict):
                return
            self.volume_requests.append(volume)
            self._apply_volume(volume)
        elif kind != "GET_STATUS":
            return
        self._broadcast_receiver_status(
            reply_to=connection, request_id=request_id, source=frame.source_id
        )

    async def _on_media(self, connection: _Connection, frame: Frame) -> None:
        kind = frame.data.get("type")
        request_id = frame.data.get("requestId", 0)
        if self.app is None or frame.destination_id != self.app.transport_id:
            return
        if kind == "LOAD":
            await self._load(connection, frame)
            return
        if kind == "STOP" and self.media:
            self.stops.append("media")
            await self._stop_player()
            self.media.player_state, self.media.idle_reason = "IDLE", "CANCELLED"
        elif kind != "GET_STATUS":
            return
        self._broadcast_media_status(
            reply_to=connection, request_id=request_id, source=frame.source_id
        )
        if self.media and self.media.player_state == "IDLE" and kind == "STOP":
            self.media = None

    async def _load(self, connection: _Connection, frame: Frame) -> None:
        assert self.app is not None
        assert self._http is not None
        request_id = frame.data.get("requestId", 0)
        self.loads.append(frame.data)
        await self._stop_player()
        media_info = dict(frame.data.get("media", {}))
        failure: PlaybackError | None = None
        player = HlsPlayer(
            str(media_info.get("contentId", "")),
            self._http,
            self.log,
            self._player_state,
            self.stall,
        )
        if self._fail_next_load is not None:
            failure = PlaybackError(self._fail_next_load, "told to fail")
            self._fail_next_load = None
        elif media_info.get("streamType") != "LIVE":
            failure = PlaybackError(104, "a live HLS stream must be LOADed as LIVE")
        else:
            try:
                await player.open()
            except PlaybackError as exc:
                failure = exc
        if failure is not None:
            self.log.probes.append({"error": str(failure), "code": failure.code})
            self.media = None
            connection.send(
                self.app.transport_id,
                frame.source_id,
                NS_MEDIA,
                {
                    "type": "LOAD_FAILED",
                    "requestId": request_id,
                    "itemId": 1,
                    "detailedErrorCode": failure.code,
                },
            )
            self._touch()
            return
        self.media = Media(next(self._media_ids), media_info)
        self._broadcast_media_status(
            reply_to=connection, request_id=request_id, source=frame.source_id
        )
        self._player_task = asyncio.get_running_loop().create_task(player.play())

    def _player_state(self, state: str, idle_reason: str | None) -> None:
        if self.media is None:
            return
        self.media.player_state, self.media.idle_reason = state, idle_reason
        self.player_history.append((state, idle_reason))
        self._broadcast_media_status()

    async def _stop_player(self) -> None:
        task, self._player_task = self._player_task, None
        if task:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _end_app(self, *, broadcast: bool = True) -> None:
        """The app is gone: senders on its transport get CLOSE, everyone a new status."""
        app, self.app = self.app, None
        self.media = None
        if app:
            for connection in self._connections:
                if app.transport_id in connection.channels:
                    connection.channels.discard(app.transport_id)
                    connection.send(app.transport_id, "sender-0", NS_CONNECTION, {"type": "CLOSE"})
        if broadcast:
            self._broadcast_receiver_status()

    def _receiver_status(self) -> dict[str, Any]:
        status: dict[str, Any] = {
            "isActiveInput": True,
            "isStandBy": False,
            "volume": {
                "controlType": "attenuation",
                "level": self.volume_level,
                "muted": self.muted,
                "stepInterval": 0.05,
            },
        }
        if self.app:
            status["applications"] = [self.app.to_json()]
        return status

    def _broadcast_receiver_status(
        self, reply_to: _Connection | None = None, request_id: int = 0, source: str = "*"
    ) -> None:
        payload = {"type": "RECEIVER_STATUS", "status": self._receiver_status()}
        for connection in self._connections:
            if connection is reply_to:
                connection.send(
                    PLATFORM_ID, source, NS_RECEIVER, {**payload, "requestId": request_id}
                )
            else:
                connection.send(PLATFORM_ID, "*", NS_RECEIVER, {**payload, "requestId": 0})
        self._touch()

    def _broadcast_media_status(
        self, reply_to: _Connection | None = None, request_id: int = 0, source: str = "*"
    ) -> None:
        if self.app is None:
            return
        payload = {"type": "MEDIA_STATUS", "status": [self.media.to_json()] if self.media else []}
        for connection in self._connections:
            if connection is reply_to:
                connection.send(
                    self.app.transport_id, source, NS_MEDIA, {**payload, "requestId": request_id}
                )
            elif self.app.transport_id in connection.channels:
                connection.send(self.app.transport_id, "*", NS_MEDIA, {**payload, "requestId": 0})
        self._touch()
