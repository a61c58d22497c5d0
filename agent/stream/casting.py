"""Keeping one session's stream on its Cast device: the one cast recovery policy.

The device reports facts (agent/cast/base.py ``DeviceFacts``); this module decides what they
mean for our stream and what to do, and tells the session listener:

- the device went away (TV off, Wi-Fi gone, reboot): ``waiting``/``device_away``; after
  ``cast.park_after_s`` the pipeline is parked; the device is probed back with backoff and the
  stream cast again with no user action. ``cast.recover_timeout`` (null: never) gives up.
- another app or sender took the screen: ``cast.on_takeover`` ``resume`` steps aside
  (``waiting``/``taken_over``) and casts again once the device has shown its idle screen for
  ``cast.resume_after_s``; ``respect`` ends the stream; ``reclaim`` casts again at once.
- our app was closed by the device or our media went idle: cast again at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from loguru import logger

from agent.cast.base import MEDIA_RECEIVER_APP_ID, CastDevice, DeviceFacts
from agent.config import CastSettings
from agent.errors import ErrorCode, PagecastError
from agent.retry import Backoff
from agent.supervisor.session import SessionListener
from agent.supervisor.state import EventName

# Statuses come in bursts (an app switch, a reconnect): trouble is acted on once the facts
# have been quiet this long and still show it.
SETTLE_S = 1.0
# An away device is probed this often at most (with backoff from PROBE_MIN_S): a TV back after
# a night is playing again well within a minute.
PROBE_MIN_S = 1.0
PROBE_MAX_S = 30.0
# A device that is there but fails to play is asked again with backoff up to this.
RECAST_MIN_S = 1.0
RECAST_MAX_S = 60.0
# Without a deadline from above, a device stop may take this long.
STOP_TIMEOUT_S = 5.0
# A stop of another sender (CANCELLED) or another sender's LOAD (INTERRUPTED) ends our media.
_TAKEN_IDLE_REASONS = ("CANCELLED", "INTERRUPTED")

AWAY = "connection_lost"
TAKEN_OVER = "taken_over"
CLOSED = "app_closed"
IDLE = "idle"

Resolve = Callable[[], Awaitable[CastDevice | None]]
# The stream's URL as a device at this host reaches it.
StreamUrl = Callable[[str], Awaitable[str]]


def judge(facts: DeviceFacts) -> str | None:
    """What keeps our stream off the screen, by these facts; None: it is on screen."""
    if not facts.connected:
        return AWAY
    if facts.idle_screen:
        return CLOSED
    if facts.app_id != MEDIA_RECEIVER_APP_ID:
        return TAKEN_OVER
    if facts.content_id is not None and not facts.ours:
        return TAKEN_OVER
    if facts.player_state == "IDLE" or facts.content_id is None:
        return TAKEN_OVER if facts.idle_reason in _TAKEN_IDLE_REASONS else IDLE
    return None


def _other_app(facts: DeviceFacts) -> bool:
    """Another app than ours runs (YouTube, a timer): not the idle screen, not our receiver."""
    return facts.connected and not facts.idle_screen and facts.app_id != MEDIA_RECEIVER_APP_ID


def _their_media_ended(facts: DeviceFacts) -> bool:
    """The media receiver shows its idle splash: another sender's media ended (or is gone).

    Our own media stopped by another sender is not counted (``ours``): that person asked our
    stream off the screen, and only the device going back to its idle screen outlives that."""
    ended = facts.player_state in (None, "IDLE")
    return facts.app_id == MEDIA_RECEIVER_APP_ID and not facts.ours and ended


@dataclass(frozen=True, slots=True)
class Parking:
    """The session's pipeline, parked while the screen cannot show it."""

    park: Callable[[], Awaitable[None]]
    unpark: Callable[[], Awaitable[None]]


class Casting:
    """The session's side of the device: show the stream, keep it shown, leave as asked."""

    def __init__(
        self,
        device: CastDevice | None,
        listener: SessionListener,
        settings: CastSettings,
        parking: Parking,
    ) -> None:
        self.device = device
        self._listener = listener
        self._settings = settings
        self._parking = parking
        self._stream_url = ""
        self._title = ""
        self._tasks: list[asyncio.Task[None]] = []
        self._parker: asyncio.Task[None] | None = None
        self._parking_now = False  # a park under way is finished, never cut in half
        # Since when, and why, the screen has not shown the stream (None: it does).
        self._waiting_since: float | None = None
        self._waiting_for: str | None = None
        self._stopped = False

    # -- the session's calls -----------------------------------------------------------------

    async def show(self, stream_url: str, title: str, *, resumed: bool = False) -> None:
        """Cast the stream (raises CAST_FAILED / DEVICE_UNREACHABLE), then keep it on screen.

        A ``resumed`` wish (nobody asked just now) does not cast over another app that runs
        when it starts: with ``on_takeover: resume`` it waits for it like for a takeover."""
        device = self._device()
        self._stream_url, self._title = stream_url, title
        self._follow(device)
        if resumed and self._settings.on_takeover == "resume" and _other_app(device.facts):
            logger.info("{} shows another app: casting once it is done", device.name)
            self._wait(device, TAKEN_OVER)
            self._spawn(lambda: self._resume_then_keep(device), "cast-keep")
            return
        logger.info("casting to {}", device.name)
        await device.show(stream_url, title)
        self._spawn(lambda: self._keep(device), "cast-keep")

    async def _resume_then_keep(self, device: CastDevice) -> None:
        if await self._recover(device, TAKEN_OVER, time.monotonic()):
            await self._keep(device)

    def await_device(self, resolve: Resolve, stream_url: StreamUrl, title: str) -> None:
        """A resumed wish whose device is not reachable now: wait for it (``device_away``)
        instead of failing, then cast; ``stream_url`` gives the URL as the device's host sees
        it."""
        self._title = title
        self._wait(None, "device_away")  # before the start returns: it starts out waiting
        self._spawn(lambda: self._await_device(resolve, stream_url), "cast-await")

    async def stop(self, *, handover: bool, deadline: float | None = None) -> None:
        """Close our receiver (within ``deadline``, event loop time), or with ``handover``
        keep it running for the next session's LOAD (same device: the TV does not flash its
        idle screen between two streams)."""
        self._stopped = True
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._cancel_parking()
        device = self.device
        if device is None:
            return
        if handover:
            await device.release()
            return
        if deadline is None:
            deadline = asyncio.get_running_loop().time() + STOP_TIMEOUT_S
        try:
            await device.stop(deadline)
        except Exception as exc:
            logger.warning("stopping the Cast device failed: {}", exc)

    # -- reporting ---------------------------------------------------------------------------

    def _device(self) -> CastDevice:
        assert self.device is not None
        return self.device

    def _follow(self, device: CastDevice) -> None:
        """Report the device's player state and name to the status on every change."""
        self._report(device.facts)
        self._spawn(lambda: self._reporting(device), "cast-report")

    def _spawn(self, work: Callable[[], Coroutine[Any, Any, None]], name: str) -> None:
        if not self._stopped:
            self._tasks.append(asyncio.create_task(self._guarded(work), name=name))

    async def _guarded(self, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """A bug in the policy ends the session loudly instead of leaving the screen unwatched."""
        try:
            await work()
        except Exception as exc:
            logger.opt(exception=exc).error("keeping the stream on screen failed")
            error = PagecastError(ErrorCode.INTERNAL, f"cast policy failed: {exc!r}")
            self._listener.ended(error, "internal")

    async def _reporting(self, device: CastDevice) -> None:
        with device.facts_changes.subscribe() as changes:
            while True:
                self._report(await changes.get())

    def _report(self, facts: DeviceFacts) -> None:
        # Another sender's player state is theirs: ours is unknown (None) meanwhile.
        state = facts.player_state if facts.ours else None
        self._listener.set_player(player_state=state, device=self._device().name)
        # The device's own volume, whoever changed it (our cmd/volume, its remote, a phone).
        self._listener.set_volume(facts.volume, facts.muted)

    # -- keeping the stream on screen --------------------------------------------------------

    async def _keep(self, device: CastDevice) -> None:
        while True:
            trouble = await self._trouble(device)
            logger.info("cast trouble on {}: {} ({})", device.name, trouble, device.facts)
            self._listener.event(EventName.DEVICE_LOST, reason=trouble, device=device.name)
            if not await self._recover(device, trouble, time.monotonic()):
                return

    async def _trouble(self, device: CastDevice) -> str:
        """Until the facts show, and keep showing, that our stream is off the screen."""
        with device.facts_changes.subscribe() as changes:
            while True:
                trouble = judge(device.facts)
                if trouble == AWAY:
                    return trouble
                if trouble is not None:
                    await _quiet(changes, SETTLE_S)
                    trouble = judge(device.facts)
                    if trouble is not None:
                        return trouble
                    continue
                await changes.get()

    async def _recover(self, device: CastDevice, trouble: str, lost_at: float) -> bool:
        """Back on screen (True), or the session ended (False)."""
        first, recast = trouble, Backoff(RECAST_MIN_S, RECAST_MAX_S)
        while True:
            if trouble == AWAY and not await self._until_back(device, lost_at):
                return False
            if trouble == TAKEN_OVER:
                if self._settings.on_takeover == "respect":
                    self._listener.ended(None, TAKEN_OVER)
                    return False
                if self._settings.on_takeover == "resume":
                    outlived = await self._outlive(device)
                    if outlived is not None:
                        trouble = outlived
                        continue
            try:
                await self._show_again(device)
            except PagecastError as exc:
                remaining = self._remaining(lost_at)
                if remaining is not None and remaining <= 0:
                    logger.warning("giving up on {}: {}", device.name, exc.message)
                    self._listener.ended(exc, "cast_failed")
                    return False
                delay = recast.next()
                logger.warning(
                    "casting to {} again failed ({}); retry in {:.0f} s", device.name, exc, delay
                )
                await asyncio.sleep(delay)
                trouble = judge(device.facts) or IDLE
                continue
            self._on_screen(device, first, lost_at)
            return True

    def _on_screen(self, device: CastDevice, reason: str, lost_at: float) -> None:
        if self._waiting_since is not None:
            self._listener.set_waiting(None)
            self._waiting_since = self._waiting_for = None
        after_s = round(time.monotonic() - lost_at, 1)
        logger.info("{} shows the stream again after {} s ({})", device.name, after_s, reason)
        self._listener.event(
            EventName.RECOVERED, reason=reason, device=device.name, after_s=after_s
        )

    async def _show_again(self, device: CastDevice) -> None:
        await self._cancel_parking()
        try:
            await self._parking.unpark()
        except Exception as exc:
            raise PagecastError(ErrorCode.PIPELINE_FAILED, f"unparking failed: {exc}") from exc
        if judge(device.facts) is None:
            return  # still (or again) ours and playing: a blip, nothing to cast
        await device.show(self._stream_url, self._title)

    async def _until_back(self, device: CastDevice, lost_at: float) -> bool:
        """Probe the device until it answers; False once ``recover_timeout`` gave up."""
        self._wait(device, "device_away")
        probe = Backoff(PROBE_MIN_S, PROBE_MAX_S)
        while not device.facts.connected:
            delay = probe.next()
            remaining = self._remaining(lost_at)
            if remaining is not None and remaining <= 0:
                self._give_up(device)
                return False
            if await device.wait_connected(min(delay, remaining or delay)):
                break
            logger.debug("{} still away; probing it again", device.name)
            await device.reconnect()
        with device.facts_changes.subscribe() as changes:
            # Its statuses (app, then our media) arrive just after the connection.
            await _quiet(changes, SETTLE_S)
        return True

    async def _outlive(self, device: CastDevice) -> str | None:
        """Step aside until the device has been idle for ``resume_after_s``: its idle screen,
        or the media receiver left with another sender's media ended (or none).

        Never casts while the other app or media runs. None: time to cast again; otherwise the new
        trouble (the device went away meanwhile).
        """
        self._wait(device, "taken_over")
        idle_since: float | None = None
        with device.facts_changes.subscribe() as changes:
            while True:
                facts = device.facts
                if not facts.connected:
                    return AWAY
                if judge(facts) is None:
                    return None  # ours again (someone cast our stream back)
                timeout: float | None = None
                if facts.idle_screen or _their_media_ended(facts):
                    idle_since = idle_since or time.monotonic()
                    timeout = idle_since + self._settings.resume_after_s - time.monotonic()
                    if timeout <= 0:
                        return None
                else:
                    idle_since = None
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await changes.get()

    # -- waiting, parking, giving up ---------------------------------------------------------

    def _wait(self, device: CastDevice | None, reason: str) -> None:
        if reason != self._waiting_for:
            name = device.name if device else "the Cast device"
            logger.info("waiting for {}: {}", name, reason)
            self._waiting_for = reason
            self._listener.set_waiting(reason)
        if self._waiting_since is None:
            self._waiting_since = time.monotonic()
        if self._parker is None:
            self._parker = asyncio.create_task(self._park_later(), name="cast-park")

    async def _park_later(self) -> None:
        assert self._waiting_since is not None
        after_s = self._settings.park_after_s
        await asyncio.sleep(self._waiting_since + after_s - time.monotonic())
        logger.info("the screen has not shown the stream for {:g} s: parking", after_s)
        self._parking_now = True
        try:
            await self._parking.park()
        except Exception as exc:  # the pipeline's own watch heals what parking broke
            logger.warning("parking failed: {}", exc)
        finally:
            self._parking_now = False

    async def _cancel_parking(self) -> None:
        parker, self._parker = self._parker, None
        if parker is None:
            return
        if not self._parking_now:
            parker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await parker

    def _remaining(self, lost_at: float) -> float | None:
        timeout = self._settings.recover_timeout
        return None if timeout is None else lost_at + timeout - time.monotonic()

    def _give_up(self, device: CastDevice) -> None:
        timeout = self._settings.recover_timeout
        error = PagecastError(
            ErrorCode.DEVICE_UNREACHABLE, f"{device.name} did not come back within {timeout:g} s"
        )
        logger.warning(error.message)
        self._listener.ended(error, "device_unreachable")

    # -- a device not reachable at a resumed start -------------------------------------------

    async def _await_device(self, resolve: Resolve, stream_url: StreamUrl) -> None:
        lost_at = time.monotonic()
        probe = Backoff(PROBE_MIN_S, PROBE_MAX_S)
        while True:
            try:
                device = await resolve()
                break
            except PagecastError as exc:
                remaining = self._remaining(lost_at)
                if remaining is not None and remaining <= 0:
                    logger.warning("giving up on the Cast device: {}", exc.message)
                    self._listener.ended(exc, "device_unreachable")
                    return
                delay = probe.next()
                logger.info("Cast device not there yet ({}); again in {:.0f} s", exc, delay)
                await asyncio.sleep(min(delay, remaining or delay))
        if device is None:  # "none" after all: the stream runs without a screen
            await self._cancel_parking()
            await self._parking.unpark()
            self._listener.set_waiting(None)
            return
        self.device = device
        self._stream_url = await stream_url(device.host)
        self._listener.set_stream_url(self._stream_url)
        self._follow(device)
        if await self._recover(device, judge(device.facts) or CLOSED, lost_at):
            await self._keep(device)


async def _quiet(changes: asyncio.Queue[DeviceFacts], quiet_s: float) -> None:
    """Until no change arrived for ``quiet_s`` (bounded: a chatty device is not waited out)."""
    for _ in range(5):
        try:
            async with asyncio.timeout(quiet_s):
                await changes.get()
        except TimeoutError:
            return
