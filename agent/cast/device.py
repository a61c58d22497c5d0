"""A Cast device: what it reports, and the few things we ask of it.

It reports facts (connected, running app, our media's player state, volume) to whoever
subscribes, and offers actions (show a stream, stop it, set the volume, reconnect). It decides
nothing about trouble: keeping the stream on screen is agent/stream/casting.py's job.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from loguru import logger
from pychromecast.controllers.media import MEDIA_PLAYER_ERROR_CODES

from agent.broadcast import Broadcast
from agent.cast.base import BACKDROP_APP_ID, MEDIA_RECEIVER_APP_ID, DeviceFacts
from agent.cast.connection import CastConnection, CastRequestError, DeviceEvent
from agent.config import CastSettings
from agent.errors import ErrorCode, PagecastError
from agent.stream.hls import HLS_CONTENT_TYPE

# pychromecast's own request timeout for a stop or a volume change.
REQUEST_TIMEOUT_S = 5.0


class ChromecastDevice:
    """Implements agent.cast.base.CastDevice on one kept-open connection."""

    def __init__(self, name: str, host: str, settings: CastSettings) -> None:
        self._name = name
        self._host = host
        self._settings = settings
        self._connection: CastConnection | None = None
        # The stream we last showed: tells our media from another sender's, and what stop()
        # may close (also after a handover to a session that failed before its own LOAD).
        self._shown_url: str | None = None
        self._facts = DeviceFacts()
        self.facts_changes: Broadcast[DeviceFacts] = Broadcast()
        self._changed = asyncio.Event()
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

    @property
    def facts(self) -> DeviceFacts:
        return self._facts

    # -- what pychromecast reports (on the loop) -------------------------------------------

    def on_event(self, _event: DeviceEvent) -> None:
        self._changed.set()
        facts = self._read_facts()
        if facts != self._facts:
            self._facts = facts
            self.facts_changes.publish(facts)

    def _read_facts(self) -> DeviceFacts:
        connection = self.connection
        if not connection.connected:
            return DeviceFacts()
        receiver = connection.receiver
        app_id = receiver.app_id if receiver else None
        # Media counts only inside the media receiver (another app's status is not ours).
        media = connection.media if app_id == MEDIA_RECEIVER_APP_ID else None
        content_id = media.content_id if media else None
        return DeviceFacts(
            connected=True,
            app_id=app_id,
            idle_screen=app_id in (None, BACKDROP_APP_ID),
            ours=media is not None and content_id is not None and content_id == self._shown_url,
            player_state=media.player_state if media else None,
            idle_reason=media.idle_reason if media else None,
            content_id=content_id,
            media_session_id=media.media_session_id if media else None,
            volume=receiver.volume if receiver else None,
            muted=receiver.muted if receiver else None,
        )

    # -- actions -----------------------------------------------------------------------------

    async def wait_connected(self, within_s: float) -> bool:
        return await self.connection.wait_connected(within_s)

    async def reconnect(self) -> None:
        await self.connection.restart()

    async def show(self, stream_url: str, title: str) -> None:
        # Set even if this fails half-way: stop() then closes what we launched.
        self._shown_url = stream_url
        connection = self.connection
        if not connection.connected:
            await connection.restart()
        if not await connection.wait_connected(self._settings.connect_timeout):
            raise PagecastError(
                ErrorCode.DEVICE_UNREACHABLE,
                f"{self._name} ({self._host}) not reachable within "
                f"{self._settings.connect_timeout:g} s",
            )
        try:
            async with asyncio.timeout(self._settings.play_timeout):
                await self._launch()
                media_session_id = await self._load(stream_url, title)
                await self._until_playing(media_session_id)
        except TimeoutError:
            raise PagecastError(
                ErrorCode.CAST_FAILED,
                f"{self._name} did not report PLAYING within {self._settings.play_timeout:g} s "
                f"(player state {self._facts.player_state})",
            ) from None
        self._log.info("{} is playing {}", self._name, stream_url)

    async def _launch(self) -> None:
        try:
            await self.connection.launch(MEDIA_RECEIVER_APP_ID)
        except CastRequestError as exc:
            reason = (exc.response or {}).get("reason", str(exc))
            raise PagecastError(
                ErrorCode.CAST_FAILED,
                f"{self._name} refused to launch the media receiver: {reason}",
            ) from None

    async def _load(self, stream_url: str, title: str) -> int | None:
        """LOAD; the media session id the device gave it."""
        try:
            answer = await self.connection.load(stream_url, HLS_CONTENT_TYPE, title)
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
        media_session_id = statuses[0].get("mediaSessionId")
        return media_session_id if isinstance(media_session_id, int) else None

    async def _until_playing(self, media_session_id: int | None) -> None:
        while True:
            facts = self._facts
            if not facts.connected:
                raise PagecastError(
                    ErrorCode.DEVICE_UNREACHABLE, f"lost the connection to {self._name}"
                )
            if facts.ours and facts.media_session_id == media_session_id:
                if facts.player_state == "PLAYING":
                    return
                if facts.player_state == "IDLE":
                    raise PagecastError(
                        ErrorCode.CAST_FAILED,
                        f"{self._name} stopped playing: IDLE ({facts.idle_reason})",
                    )
            if facts.content_id is not None and not facts.ours:
                raise PagecastError(
                    ErrorCode.CAST_FAILED, f"{self._name} is playing something else"
                )
            self._changed.clear()
            await self._changed.wait()

    async def stop(self, deadline: float | None = None) -> None:
        facts, connection = self._facts, self._connection
        # Asked once: a later stop (the manager closing at shutdown) must not wait on a TV
        # that did not answer the first time.
        shown, self._shown_url = self._shown_url, None
        if shown is None or connection is None or not facts.connected:
            return
        if facts.app_id != MEDIA_RECEIVER_APP_ID:
            return  # not our app (any more): leave it alone
        if facts.content_id is not None and not facts.ours:
            return  # another sender's media in the media receiver
        timeout_s = REQUEST_TIMEOUT_S
        if deadline is not None:
            timeout_s = min(timeout_s, deadline - asyncio.get_running_loop().time())
        if timeout_s <= 0:
            return
        quit_app = self._settings.stop_action == "quit"
        request = connection.quit_app if quit_app else connection.stop_media
        await self._bounded(request(timeout_s), timeout_s)

    async def _bounded(self, request: Awaitable[None], timeout_s: float) -> None:
        """A stop that cannot overrun: pychromecast's timeout, and ours should its thread hang."""
        try:
            async with asyncio.timeout(timeout_s + 0.5):
                await request
        except (CastRequestError, TimeoutError) as exc:
            self._log.warning(
                "could not {} on {}: {}", self._settings.stop_action, self._name, exc or "timeout"
            )

    async def release(self) -> None:
        # Nothing to undo on the device: _shown_url stays, so a successor that fails before
        # its own LOAD still closes the receiver we kept running for it.
        return

    async def set_volume(self, level: float | None, muted: bool | None) -> None:
        connection = self.connection
        if not connection.connected:
            raise PagecastError(ErrorCode.DEVICE_UNREACHABLE, f"{self._name} is not connected")
        try:
            if level is not None:
                await connection.set_volume(level, REQUEST_TIMEOUT_S)
            if muted is not None:
                await connection.set_muted(muted, REQUEST_TIMEOUT_S)
        except CastRequestError as exc:
            raise PagecastError(ErrorCode.CAST_FAILED, f"{self._name}: {exc}") from None

    async def close(self) -> None:
        await self.stop()
        if self._connection is not None:
            await self._connection.close()
