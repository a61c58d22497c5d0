"""A Cast device that plays one live stream at a time and keeps it on screen.

It tells the truth about the screen (player state from MEDIA_STATUS), heals what a device does
by itself (reboots, dropped connections, an idle close) and steps aside when a person casts
something else, unless ``cast.on_takeover: reclaim``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

from loguru import logger
from pychromecast.config import APP_MEDIA_RECEIVER
from pychromecast.controllers.media import MEDIA_PLAYER_ERROR_CODES

from agent.cast.connection import (
    CastConnection,
    CastRequestError,
    ConnectionChanged,
    DeviceEvent,
    MediaChanged,
    ReceiverChanged,
)
from agent.config import CastSettings
from agent.errors import ErrorCode, PagecastError
from agent.supervisor.session import SessionListener
from agent.supervisor.state import EventName

HLS_CONTENT_TYPE = "application/vnd.apple.mpegurl"
MAX_RECOVERY_ATTEMPTS = 5
RECOVERY_BACKOFF_MAX_S = 30.0
STOP_TIMEOUT_S = 5.0
# While a device is away, a fresh connection this often keeps pychromecast's backoff short.
RECONNECT_REFRESH_S = 30.0
# What a receiver shows when nothing is cast; seeing it means our app was closed.
IDLE_APPS = {None, "E8C28D3C"}


@dataclass(eq=False)
class _Target:
    stream_url: str
    title: str
    listener: SessionListener


class ChromecastDevice:
    """Implements agent.cast.base.CastDevice on one kept-open connection."""

    def __init__(self, name: str, host: str, settings: CastSettings) -> None:
        self._name = name
        self._host = host
        self._settings = settings
        self._connection: CastConnection | None = None
        self._target: _Target | None = None
        self._media_session_id: int | None = None
        self._showing = False  # a launch/LOAD of ours is in flight: statuses are expected churn
        self._changed = asyncio.Event()
        self._trouble: asyncio.Queue[str] = asyncio.Queue()
        self._follower: asyncio.Task[None] | None = None
        self._log = logger.bind(device=name)

    def attach(self, connection: CastConnection) -> None:
        self._connection = connection

    @property
    def name(self) -> str:
        return self._name

    @name.setter
    def name(self, name: str) -> None:
        self._name = name
        self._log = logger.bind(device=name)

    @property
    def host(self) -> str:
        return self._host

    @property
    def connection(self) -> CastConnection:
        assert self._connection is not None
        return self._connection

    # -- what pychromecast reports (on the loop) -------------------------------------------

    def on_event(self, event: DeviceEvent) -> None:
        self._changed.set()
        target = self._target
        if target is None:
            return
        if isinstance(event, MediaChanged):
            target.listener.set_player(player_state=event.player_state, device=self._name)
        elif _gone(event):
            target.listener.set_player(player_state=None, device=self._name)
        following = self._follower is not None and not self._showing
        trouble = self._trouble_in(event, target) if following else None
        if trouble:
            self._log.info("cast trouble: {} ({})", trouble, event)
            self._trouble.put_nowait(trouble)

    def _trouble_in(self, event: DeviceEvent, target: _Target) -> str | None:
        if isinstance(event, ConnectionChanged):
            return None if event.connected else "connection_lost"
        if isinstance(event, ReceiverChanged):
            if event.app_id == APP_MEDIA_RECEIVER:
                return None
            return "app_closed" if event.app_id in IDLE_APPS else "taken_over"
        if event.content_id and event.content_id != target.stream_url:
            return "taken_over"
        if event.media_session_id == self._media_session_id and event.player_state == "IDLE":
            # CANCELLED: a person pressed stop on another sender; INTERRUPTED: another LOAD.
            if event.idle_reason in ("CANCELLED", "INTERRUPTED"):
                return "taken_over"
            return "idle"
        return None

    # -- CastDevice ------------------------------------------------------------------------

    async def play(self, stream_url: str, title: str, listener: SessionListener) -> None:
        await self._unfollow()
        target = _Target(stream_url, title, listener)
        # Set even if this fails or is cancelled half-way: stop() then closes what we launched.
        self._target = target
        if not self.connection.connected:
            await self.connection.restart()
        if not await self.connection.wait_connected(self._settings.connect_timeout):
            raise PagecastError(
                ErrorCode.DEVICE_UNREACHABLE,
                f"{self._name} ({self._host}) not reachable within "
                f"{self._settings.connect_timeout:g} s",
            )
        await self._show(target)
        self._follower = asyncio.get_running_loop().create_task(self._follow(target))

    async def stop(self) -> None:
        target = self._target
        await self._unfollow()
        connection = self._connection
        if target is None or connection is None or not connection.connected:
            return
        receiver, media = connection.receiver, connection.media
        if receiver is None or receiver.app_id != APP_MEDIA_RECEIVER:
            return  # not our app (any more): leave it alone
        if media is not None and media.content_id not in (None, target.stream_url):
            return
        try:
            if self._settings.stop_action == "quit":
                await connection.quit_app(STOP_TIMEOUT_S)
            else:
                await connection.stop_media(STOP_TIMEOUT_S)
        except CastRequestError as exc:
            self._log.warning("could not {} on {}: {}", self._settings.stop_action, self._name, exc)

    async def release(self) -> None:
        target = self._target
        await self._unfollow()
        # Remember what we left on screen: should the next session fail before its own
        # LOAD, its stop() still closes the receiver we kept running for it.
        self._target = target

    async def close(self) -> None:
        await self.stop()
        if self._connection is not None:
            await self._connection.close()

    # -- showing and keeping the stream on screen ------------------------------------------

    async def _unfollow(self) -> None:
        self._target = None
        follower, self._follower = self._follower, None
        if follower is not None and follower is not asyncio.current_task():
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follower
        while not self._trouble.empty():
            self._trouble.get_nowait()

    async def _show(self, target: _Target) -> None:
        """Launch the Default Media Receiver, LOAD, and wait for PLAYING."""
        connection = self.connection
        self._showing = True
        self._media_session_id = None
        try:
            async with asyncio.timeout(self._settings.play_timeout):
                try:
                    await connection.launch(APP_MEDIA_RECEIVER)
                except CastRequestError as exc:
                    reason = (exc.response or {}).get("reason", str(exc))
                    raise PagecastError(
                        ErrorCode.CAST_FAILED,
                        f"{self._name} refused to launch the media receiver: {reason}",
                    ) from None
                try:
                    answer = await connection.load(
                        target.stream_url, HLS_CONTENT_TYPE, target.title
                    )
                except CastRequestError as exc:
                    raise PagecastError(ErrorCode.CAST_FAILED, f"{self._name}: {exc}") from None
                if answer.get("type") == "LOAD_FAILED":
                    code = answer.get("detailedErrorCode")
                    name = MEDIA_PLAYER_ERROR_CODES.get(code, "unknown")
                    raise PagecastError(
                        ErrorCode.CAST_FAILED,
                        f"{self._name} could not play the stream: LOAD_FAILED {code} ({name})",
                    )
                statuses = answer.get("status") or [{}]
                self._media_session_id = statuses[0].get("mediaSessionId")
                await self._until_playing(target)
        except TimeoutError:
            media = connection.media
            state = media.player_state if media else None
            raise PagecastError(
                ErrorCode.CAST_FAILED,
                f"{self._name} did not report PLAYING within {self._settings.play_timeout:g} s "
                f"(player state {state})",
            ) from None
        finally:
            self._showing = False
        self._log.info("{} is playing {}", self._name, target.stream_url)

    async def _until_playing(self, target: _Target) -> None:
        connection = self.connection
        while True:
            if not connection.connected:
                raise PagecastError(
                    ErrorCode.DEVICE_UNREACHABLE, f"lost the connection to {self._name}"
                )
            media = connection.media
            if media is not None and media.media_session_id == self._media_session_id:
                if media.player_state == "PLAYING":
                    return
                if media.player_state == "IDLE":
                    raise PagecastError(
                        ErrorCode.CAST_FAILED,
                        f"{self._name} stopped playing: IDLE ({media.idle_reason})",
                    )
            if media is not None and media.content_id not in (None, target.stream_url):
                raise PagecastError(
                    ErrorCode.CAST_FAILED, f"{self._name} is playing something else"
                )
            self._changed.clear()
            await self._changed.wait()

    async def _follow(self, target: _Target) -> None:
        """Handle trouble one case at a time until stopped, taken over or beyond repair."""
        while True:
            reason = await self._trouble.get()
            target.listener.event(EventName.DEVICE_LOST, reason=reason, device=self._name)
            if reason == "taken_over" and self._settings.on_takeover == "respect":
                self._target = None  # their screen now: stop() must not quit their app
                target.listener.ended(None, "taken_over")
                return
            if not await self._recover(target, reason):
                return
            while not self._trouble.empty():
                self._trouble.get_nowait()  # churn from our own relaunch

    async def _recover(self, target: _Target, reason: str) -> bool:
        lost_at = time.monotonic()
        delay = 1.0
        attempt = 0
        while True:
            attempt += 1
            if not await self._reconnected(lost_at):
                target.listener.ended(
                    PagecastError(
                        ErrorCode.DEVICE_UNREACHABLE,
                        f"{self._name} did not come back within "
                        f"{self._settings.recover_timeout:g} s",
                    ),
                    "device_unreachable",
                )
                return False
            try:
                await self._show(target)
            except PagecastError as exc:
                self._log.warning("recovery attempt {} on {} failed: {}", attempt, self._name, exc)
                if attempt >= MAX_RECOVERY_ATTEMPTS:
                    target.listener.ended(exc, "cast_failed")
                    return False
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECOVERY_BACKOFF_MAX_S)
                continue
            target.listener.event(
                EventName.RECOVERED,
                reason=reason,
                device=self._name,
                attempts=attempt,
                after_s=round(time.monotonic() - lost_at, 1),
            )
            return True

    async def _reconnected(self, lost_at: float) -> bool:
        """Whether the device is back within ``recover_timeout`` of ``lost_at``."""
        connection = self.connection
        while not connection.connected:
            remaining = self._settings.recover_timeout - (time.monotonic() - lost_at)
            if remaining <= 0:
                return False
            if not await connection.wait_connected(min(remaining, RECONNECT_REFRESH_S)):
                await connection.restart()
        return True


def _gone(event: ConnectionChanged | ReceiverChanged) -> bool:
    """Nothing of ours can be playing: the connection dropped or our app is not running."""
    if isinstance(event, ConnectionChanged):
        return not event.connected
    return event.app_id != APP_MEDIA_RECEIVER
