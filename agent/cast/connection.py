"""One pychromecast connection behind a small async facade.

pychromecast blocks and runs its own socket thread. Every call we make goes through one
single-thread executor per device, so calls are serialized (its socket writes are not
thread-safe); everything it reports from its thread is snapshotted there and handed to the
event loop with ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import pychromecast
from loguru import logger
from pychromecast.controllers.media import MediaStatus, MediaStatusListener
from pychromecast.controllers.receiver import CastStatus, CastStatusListener
from pychromecast.error import PyChromecastStopped
from pychromecast.models import CastInfo
from pychromecast.response_handler import CallbackType
from pychromecast.socket_client import (
    CONNECTION_STATUS_CONNECTED,
    CONNECTION_STATUS_DISCONNECTED,
    CONNECTION_STATUS_FAILED,
    CONNECTION_STATUS_FAILED_RESOLVE,
    CONNECTION_STATUS_LOST,
    ConnectionStatus,
    ConnectionStatusListener,
    SocketClient,
)
from zeroconf import Zeroconf

T = TypeVar("T")

# pychromecast doubles this after every failed attempt (it caps at 5 min).
RETRY_WAIT_S = 1.0
_DOWN = {
    CONNECTION_STATUS_LOST,
    CONNECTION_STATUS_FAILED,
    CONNECTION_STATUS_FAILED_RESOLVE,
    CONNECTION_STATUS_DISCONNECTED,
}


@dataclass(frozen=True, slots=True)
class ConnectionChanged:
    connected: bool
    status: str


@dataclass(frozen=True, slots=True)
class ReceiverChanged:
    app_id: str | None
    display_name: str | None
    session_id: str | None
    volume: float | None = None
    muted: bool | None = None


@dataclass(frozen=True, slots=True)
class MediaChanged:
    media_session_id: int | None
    player_state: str | None
    idle_reason: str | None
    content_id: str | None


DeviceEvent = ConnectionChanged | ReceiverChanged | MediaChanged


class CastRequestError(Exception):
    """A request the device did not accept; ``response`` is what it answered, if anything."""

    def __init__(self, message: str, response: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.response = response


class _Relay(CastStatusListener, MediaStatusListener, ConnectionStatusListener):
    """Runs in pychromecast's thread: copy what matters, hop to the loop. ``generation`` tells
    a replaced connection's last words (its DISCONNECTED) from the current one's."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sink: Callable[[int, DeviceEvent], None],
        generation: int,
    ) -> None:
        self._loop = loop
        self._sink = sink
        self._generation = generation

    def _post(self, event: DeviceEvent) -> None:
        # The loop may already be gone while the daemon thread winds down.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._sink, self._generation, event)

    def new_cast_status(self, status: CastStatus) -> None:
        self._post(
            ReceiverChanged(
                status.app_id,
                status.display_name,
                status.session_id,
                status.volume_level,
                status.volume_muted,
            )
        )

    def new_media_status(self, status: MediaStatus) -> None:
        state = status.player_state if status.player_state != "UNKNOWN" else None
        self._post(
            MediaChanged(status.media_session_id, state, status.idle_reason, status.content_id)
        )

    def load_media_failed(self, queue_item_id: int, error_code: int) -> None:
        pass  # the LOAD request's own answer carries the failure

    def new_connection_status(self, status: ConnectionStatus) -> None:
        if status.status == CONNECTION_STATUS_CONNECTED:
            self._post(ConnectionChanged(True, status.status))
        elif status.status in _DOWN:
            self._post(ConnectionChanged(False, status.status))


class CastConnection:
    """A kept-open connection to one device; pychromecast reconnects it by itself."""

    def __init__(
        self,
        info: CastInfo,
        zconf: Zeroconf | None,
        connect_timeout: float,
        on_event: Callable[[DeviceEvent], None],
    ) -> None:
        self.info = info
        self._zconf = zconf
        self._connect_timeout = connect_timeout
        self._on_event = on_event
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cast")
        self._cast: pychromecast.Chromecast | None = None
        self._generation = 0
        self._link_up = False
        self._connected = asyncio.Event()
        # A probe of the recovery and an mDNS announcement may ask for a fresh connection at
        # the same moment: one pychromecast object at a time.
        self._restarting = asyncio.Lock()
        self.receiver: ReceiverChanged | None = None
        self.media: MediaChanged | None = None

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _event(self, generation: int, event: DeviceEvent) -> None:
        if generation != self._generation:
            return
        if isinstance(event, ConnectionChanged):
            self._link_up = event.connected
            if not event.connected:
                self._connected.clear()
                self.receiver = None
                self.media = None
        elif isinstance(event, ReceiverChanged):
            if self.receiver is None or self.receiver.session_id != event.session_id:
                self.media = None  # a new app session: its media is not known yet
            self.receiver = event
            # Connected means the device answered, not just that TLS is up: pychromecast
            # reports CONNECTED before it has sent its first request.
            if self._link_up:
                self._connected.set()
        else:
            self.media = event
        self._on_event(event)

    async def open(self) -> None:
        """Start the connection (pychromecast's thread); does not wait for it to be up."""
        if self._cast is not None:
            return
        self._generation += 1
        relay = _Relay(asyncio.get_running_loop(), self._event, self._generation)

        def build() -> pychromecast.Chromecast:
            cast = pychromecast.Chromecast(
                self.info,
                tries=None,
                timeout=self._connect_timeout,
                retry_wait=RETRY_WAIT_S,
                zconf=self._zconf,
            )
            _serialize_writes(cast.socket_client)
            _quiet_stop(cast.socket_client)
            cast.register_status_listener(relay)
            cast.media_controller.register_status_listener(relay)
            cast.register_connection_listener(relay)
            cast.start()
            return cast

        self._cast = await self._call(build)

    async def wait_connected(self, within_s: float) -> bool:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within_s):
                await self._connected.wait()
        return self.connected

    async def _request(
        self, what: str, send: Callable[[CallbackType], None]
    ) -> dict[str, Any] | None:
        """Send through pychromecast and await the device's answer to that request."""
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[tuple[bool, dict[str, Any] | None]] = loop.create_future()

        def settle(sent: bool, response: dict[str, Any] | None) -> None:
            if not answer.done():
                answer.set_result((sent, response))

        def callback(sent: bool, response: dict[str, Any] | None) -> None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(settle, sent, response)

        try:
            await self._call(send, callback)
        except pychromecast.PyChromecastError as exc:
            raise CastRequestError(f"{what}: {exc or type(exc).__name__}") from exc
        sent, response = await answer
        if not sent:
            raise CastRequestError(f"{what} failed", response)
        return response

    def _chromecast(self) -> pychromecast.Chromecast:
        if self._cast is None:
            raise CastRequestError("not connected")
        return self._cast

    async def launch(self, app_id: str) -> None:
        cast = self._chromecast()
        await self._request(
            f"launch {app_id}",
            lambda cb: cast.socket_client.receiver_controller.launch_app(
                app_id, callback_function=cb
            ),
        )

    async def load(self, url: str, content_type: str, title: str) -> dict[str, Any]:
        """LOAD as LIVE; the answer is MEDIA_STATUS or LOAD_FAILED."""
        cast = self._chromecast()
        response = await self._request(
            "LOAD",
            lambda cb: cast.media_controller.play_media(
                url, content_type, title=title, stream_type="LIVE", callback_function=cb
            ),
        )
        return response or {}

    # pychromecast's own request timeout: a call blocked in its thread cannot be cancelled.
    async def quit_app(self, request_timeout_s: float) -> None:
        await self._blocking("quit app", self._chromecast().quit_app, request_timeout_s)

    async def stop_media(self, request_timeout_s: float) -> None:
        stop = self._chromecast().media_controller.stop
        await self._blocking("stop media", stop, request_timeout_s)

    async def set_volume(self, level: float, request_timeout_s: float) -> None:
        set_level = self._chromecast().socket_client.receiver_controller.set_volume
        await self._blocking(
            "set volume", lambda timeout: set_level(level, timeout), request_timeout_s
        )

    async def set_muted(self, muted: bool, request_timeout_s: float) -> None:
        set_muted = self._chromecast().socket_client.receiver_controller.set_volume_muted
        await self._blocking("mute", lambda timeout: set_muted(muted, timeout), request_timeout_s)

    async def _blocking(self, what: str, fn: Callable[[float], Any], timeout_s: float) -> None:
        try:
            await self._call(fn, timeout_s)
        except pychromecast.PyChromecastError as exc:
            raise CastRequestError(f"{what}: {exc or type(exc).__name__}") from exc

    async def restart(self) -> None:
        """A fresh connection. pychromecast's own retry delay doubles up to 5 minutes while a
        device is away; a new start or a long recovery should not wait that out."""
        async with self._restarting:
            await self._stop_cast()
            await self.open()

    async def close(self) -> None:
        await self._stop_cast()
        self._executor.shutdown(wait=False)

    async def _stop_cast(self) -> None:
        cast, self._cast = self._cast, None
        self._generation += 1
        self._link_up = False
        self._connected.clear()
        self.receiver = None
        self.media = None
        if cast is not None:
            try:
                # A thread stuck in a connect attempt notices the stop within its retry wait.
                await self._call(cast.disconnect, 2 * RETRY_WAIT_S + 1)
            except TimeoutError:
                logger.warning("cast connection to {} did not close in time", self.info.host)


# What _serialize_writes relies on: every write of pychromecast 14.0 goes through this method.
_SEND_MESSAGE_PARAMS = ("self", "destination_id", "namespace", "data")


def _quiet_stop(client: SocketClient) -> None:
    """A disconnect that lands while pychromecast's thread is still connecting makes that
    thread end with PyChromecastStopped (raised by its own first status request), which
    Python prints as an unhandled thread exception. It is the thread's normal end."""
    run = client.run

    @functools.wraps(run)
    def run_until_stopped() -> None:
        with contextlib.suppress(PyChromecastStopped):
            run()

    client.run = run_until_stopped  # type: ignore[method-assign]


# Set while a thread writes through the serialized send_message (tests check every socket
# write happens inside it: the patch is hit, not bypassed by a changed library).
writing = threading.local()


def _serialize_writes(client: SocketClient) -> None:
    """One writer at a time on the TLS socket.

    Our calls are serialized by the executor, but pychromecast's own thread writes too (PING,
    PONG, channel CONNECTs). Two threads in ``SSLSocket.sendall`` corrupt the stream
    (``SSL: BAD_LENGTH``, then a reconnect). Reentrant: send_message opens a channel by
    calling itself. Relies on pychromecast internals (its minor version is pinned): a library
    that no longer writes through ``send_message`` fails here, not with a corrupt stream.
    """
    params = tuple(inspect.signature(SocketClient.send_message).parameters)
    if params[: len(_SEND_MESSAGE_PARAMS)] != _SEND_MESSAGE_PARAMS:
        raise RuntimeError(
            f"pychromecast's SocketClient.send_message changed ({params}): "
            "the write serialization in agent/cast/connection.py needs updating"
        )
    lock = threading.RLock()
    send = client.send_message

    @functools.wraps(send)
    def locked(*args: Any, **kwargs: Any) -> None:
        with lock:
            outer = getattr(writing, "active", False)
            writing.active = True
            try:
                send(*args, **kwargs)
            finally:
                writing.active = outer

    client.send_message = locked  # type: ignore[method-assign]
