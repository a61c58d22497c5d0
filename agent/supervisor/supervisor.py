"""The single slot: one stream at a time, the latest command wins, nothing ever races.

Commands only record what is *wanted* and return at once; one worker task reconciles what is
*running* with what is wanted. A newer command cancels stream work in flight (a slow start or
page switch), so "stop" pre-empts a pending start and a start replaces one that is starting.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from loguru import logger

from agent.broadcast import Broadcast
from agent.cancellation import being_cancelled, reraise_lost_cancel
from agent.errors import ErrorCode, ErrorInfo, PagecastError
from agent.supervisor import interrupts
from agent.supervisor.session import SessionFactory, StreamRequest, StreamSession
from agent.supervisor.state import Event, EventName, State, Status, StreamFigures, iso, utcnow


@dataclass(frozen=True, slots=True)
class StartOutcome:
    session_id: str
    changed: bool


@dataclass(frozen=True, slots=True)
class Wish:
    """What the agent is asked to keep on screen; persisted so that it survives a restart."""

    session_id: str
    request: StreamRequest
    ends_at: datetime | None = None
    # An interrupt's base: the wish that comes back when this one's duration ends.
    revert_to: Wish | None = None


@dataclass(slots=True)
class _Wanted:
    session_id: str
    request: StreamRequest
    ends_at: datetime | None = None
    revert_to: Wish | None = None
    # The base coming back after an interrupt (announced as ``reverted``).
    reverting: bool = False

    def snapshot(self) -> Wish:
        return Wish(self.session_id, self.request, self.ends_at, self.revert_to)


@dataclass(frozen=True, slots=True)
class _StopReason:
    """Why nothing is wanted any more; decides the event and the final state."""

    event: EventName
    reason: str
    error: ErrorInfo | None = None


@dataclass(slots=True)
class _Running:
    session_id: str
    request: StreamRequest
    session: StreamSession
    streaming: bool = False
    # What the session said keeps the screen from showing it (see SessionListener.set_waiting).
    waiting: str | None = None
    # Sessions displaced by this one before it came up; named in its started/replaced event.
    displaced: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Kept:
    """What a switch replaces, to go back to when the new page does not load."""

    wish: _Wanted
    title: str | None


# States in which a session is up and the wish is being served (on screen or waited for).
_ON_AIR = frozenset({State.STREAMING, State.WAITING})


# A volume change is one request to the device; a device that does not answer is an error.
VOLUME_TIMEOUT_S = 5.0


def new_session_id() -> str:
    return uuid.uuid4().hex[:12]


class Supervisor:
    def __init__(
        self,
        factory: SessionFactory,
        *,
        start_timeout_s: float = 120.0,
        stop_timeout_s: float = 15.0,
    ) -> None:
        self._factory = factory
        self._start_timeout_s = start_timeout_s
        self._stop_timeout_s = stop_timeout_s
        # Loop time by which a shutdown must be over (see shutdown); bounds every teardown.
        self._deadline: float | None = None
        # A part the agent needs cannot start (see set_fault); shown while nothing streams.
        self._fault: ErrorInfo | None = None
        self._status = Status()
        self.status_changes: Broadcast[Status] = Broadcast()
        self.events: Broadcast[Event] = Broadcast()
        self.wish_changes: Broadcast[Wish | None] = Broadcast()
        self._wanted: _Wanted | None = None
        self._stop_reason = _StopReason(EventName.STOPPED, "command")
        # An error state stays visible until the next command, not until the next reconcile.
        self._clear_error = False
        self._running: _Running | None = None
        self._work: asyncio.Task[None] | None = None
        self._expiry: asyncio.TimerHandle | None = None
        self._wake = asyncio.Event()
        self._settled = asyncio.Event()
        self._settled.set()

    # -- what observers see ------------------------------------------------------------------

    @property
    def status(self) -> Status:
        return self._status

    @property
    def wish(self) -> Wish | None:
        return self._wanted.snapshot() if self._wanted is not None else None

    def figures(self) -> StreamFigures | None:
        running = self._running
        if running is None or not running.streaming:
            return None
        return running.session.figures()

    # -- commands: record the wish, never wait for stream work ---------------------------------

    def start(self, request: StreamRequest) -> StartOutcome:
        wanted = self._wanted
        revert_to = interrupts.base_for(self.wish, request)
        if wanted is not None and wanted.request.same_stream(request) and not request.force:
            return self._restate(wanted, request, revert_to)
        wanted = _Wanted(
            new_session_id(), request, _ends_at(utcnow(), request.duration_s), revert_to
        )
        self._wanted = wanted
        self._clear_error = True
        self._wish_changed()
        self._kick()
        return StartOutcome(wanted.session_id, changed=True)

    def resume(self, wish: Wish) -> StartOutcome | None:
        """Put a saved wish back after a restart (``resumed`` instead of ``started``), with
        the time it has left. An interrupt that ended while the agent was away gives way to
        its base; None when nothing of it is left to show."""
        now = utcnow()
        while wish.ends_at is not None and wish.ends_at <= now:
            if wish.revert_to is None:
                return None
            wish = wish.revert_to
        remaining = (wish.ends_at - now).total_seconds() if wish.ends_at else None
        request = replace(wish.request, resumed=True, force=False, duration_s=remaining)
        wanted = _Wanted(wish.session_id, request, wish.ends_at, wish.revert_to)
        self._wanted = wanted
        self._clear_error = True
        self._wish_changed()
        self._kick()
        return StartOutcome(wanted.session_id, changed=True)

    def _restate(
        self, wanted: _Wanted, request: StreamRequest, revert_to: Wish | None
    ) -> StartOutcome:
        """The same page asked for again: only its duration or its way back can change, and
        that without touching the stream. The same interrupt again (the doorbell rang twice)
        starts its time again."""
        again = request.revert and revert_to is not None
        same = (wanted.request.duration_s, wanted.revert_to) == (request.duration_s, revert_to)
        if same and not again:
            return StartOutcome(wanted.session_id, changed=False)
        wanted.request, wanted.revert_to = request, revert_to
        wanted.ends_at = _ends_at(utcnow(), request.duration_s)
        self._wish_changed()
        running = self._running
        if running is not None and running.session_id == wanted.session_id:
            running.request = request
            if running.streaming:
                ends_at = _ends_at(utcnow(), request.duration_s)
                self._set(revert_to=interrupts.describe(revert_to), ends_at=ends_at)
                self._schedule_expiry(wanted.session_id, request.duration_s)
        return StartOutcome(wanted.session_id, changed=True)

    def stop(self, request_id: str | None = None) -> bool:
        changed = (
            self._wanted is not None
            or self._running is not None
            or self._status.state is not State.IDLE
        )
        self._clear_error = True
        self._want_nothing(_StopReason(EventName.STOPPED, "command"), request_id=request_id)
        return changed

    # -- controls of what is on screen now ------------------------------------------------------

    def reload(self) -> str:
        """Load the page on screen again, in place; returns the session it applies to."""
        running = self._on_air("nothing is streaming: nothing to reload")
        running.session.reload()
        return running.session_id

    def next_page(self) -> str:
        running = self._on_air("nothing is streaming: no rotation to advance")
        if not running.session.next_page():
            raise PagecastError(
                ErrorCode.NOT_STREAMING, "no rotation is running (start one with urls)"
            )
        return running.session_id

    async def set_volume(self, level: float | None, muted: bool | None) -> str:
        running = self._on_air("no Cast device: nothing is casting", ErrorCode.DEVICE_NOT_FOUND)
        await _within(VOLUME_TIMEOUT_S, running.session.set_volume(level, muted))
        return running.session_id

    def _on_air(self, message: str, code: ErrorCode = ErrorCode.NOT_STREAMING) -> _Running:
        running, wanted = self._running, self._wanted
        if running is None or not running.streaming or wanted is None:
            raise PagecastError(code, message)
        if running.session_id != wanted.session_id:
            raise PagecastError(code, f"{message} (a new stream is starting)")
        return running

    async def shutdown(self, deadline: float | None = None) -> bool:
        """Stop the stream; True once nothing runs any more.

        At ``deadline`` (event loop time) stop waiting and return False: the status says idle
        all the same (a retained ``stopping`` would outlive us), and the caller kills what is
        left of the stream.
        """
        self._deadline = deadline
        self._want_nothing(_StopReason(EventName.STOPPED, "shutdown"))
        try:
            async with asyncio.timeout_at(deadline):
                await self._settled.wait()
        except TimeoutError:
            logger.warning("the stream did not stop in time")
            self._set_idle()
            return False
        return True

    def set_fault(self, fault: ErrorInfo | None) -> None:
        """Something the agent needs cannot start (None: it works again). While nothing is
        wanted the status is ``error`` with it, so it is seen before anyone sends a start."""
        previous, self._fault = self._fault, fault
        status = self._status
        if (
            self._wanted is None
            and self._running is None
            and status.state in (State.IDLE, State.ERROR)
            and status.error in (None, previous)
        ):
            self._set_idle()

    def _want_nothing(self, reason: _StopReason, *, request_id: str | None = None) -> None:
        self._wanted = None
        self._wish_changed()
        self._stop_reason = reason
        if request_id is not None and self._status.state is not State.IDLE:
            self._set(request_id=request_id)
        self._kick()

    def _kick(self) -> None:
        """Wake the worker and cancel stream work that no longer serves the latest wish."""
        self._settled.clear()
        work, running = self._work, self._running
        wanted_id = self._wanted.session_id if self._wanted else None
        if (
            work is not None
            and not work.done()
            and (running is None or running.session_id != wanted_id)
        ):
            work.cancel()
        self._wake.set()

    # -- the worker ----------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                await self._reconcile()
                if not self._wake.is_set():
                    self._settled.set()
        finally:
            # Shutdown or a crash elsewhere in the agent: nothing may outlive us.
            self._cancel_expiry()
            if self._running is not None:
                await asyncio.shield(self._teardown(self._running))
                self._running = None
            self._settled.set()

    async def _reconcile(self) -> None:
        while True:
            wanted, running = self._wanted, self._running
            if wanted is None:
                if running is not None:
                    await self._stop_running(running, self._stop_reason)
                elif self._status.state is not State.IDLE and (
                    self._status.state is not State.ERROR or self._clear_error
                ):
                    self._set_idle()
                return
            if running is not None and running.session_id == wanted.session_id:
                return
            if (
                running is not None
                and running.streaming
                and running.session.can_switch(wanted.request)
            ):
                await self._switch(running, wanted)
                continue
            displaced: list[str] = []
            if running is not None:
                displaced = [*running.displaced, running.session_id]
                await self._stop_running(
                    running,
                    _StopReason(EventName.REPLACED, "replaced"),
                    quiet=True,
                    successor=wanted.request,
                )
                if self._wanted is not wanted:
                    continue
            await self._start(wanted, displaced)

    async def _start(self, wanted: _Wanted, displaced: list[str]) -> None:
        request = wanted.request
        log = _bind(wanted.session_id, request)
        listener = _Listener(self)
        session = self._factory(wanted.session_id, request, listener)
        running = _Running(wanted.session_id, request, session, displaced=displaced)
        listener.running = running
        self._running = running
        self._cancel_expiry()
        self._status = Status()
        self._set(
            state=State.STARTING,
            session_id=wanted.session_id,
            url=request.url,
            quality=request.quality,
            device=request.device,
            request_id=request.request_id,
            **_wish_fields(wanted),
        )
        log.info("starting stream")
        try:
            await self._in_flight(lambda: _within(self._start_timeout_s, session.start()))
        except asyncio.CancelledError:
            if being_cancelled():
                raise
            # Superseded: the next round of _reconcile stops or replaces this session.
            log.info("start superseded by a newer command")
            return
        except Exception as exc:
            await self._teardown(running)
            self._running = None
            self._fail(wanted, _as_error(exc, "start"))
            return
        running.streaming = True
        now = utcnow()
        self._set(
            state=State.WAITING if running.waiting else State.STREAMING,
            reason=running.waiting,
            started_at=now,
            ends_at=_ends_at(now, request.duration_s),
            error=None,
        )
        self._schedule_expiry(wanted.session_id, request.duration_s)
        log.info("streaming")
        self._announce(wanted, displaced[-1] if displaced else None, in_place=False)

    async def _switch(self, running: _Running, wanted: _Wanted) -> None:
        request = wanted.request
        log = _bind(wanted.session_id, request)
        previous = running.session_id
        kept = _Kept(_Wanted(previous, running.request, self._status.ends_at), self._status.title)
        # From here the running session serves the new wish; a newer command cancels this.
        running.session_id, running.request = wanted.session_id, request
        self._cancel_expiry()
        self._set(
            session_id=wanted.session_id,
            url=request.url,
            request_id=request.request_id,
            title=None,
            error=None,
            **_wish_fields(wanted),
        )
        log.info("switching page in place")
        try:
            await self._in_flight(lambda: running.session.switch(wanted.session_id, request))
        except asyncio.CancelledError:
            if being_cancelled():
                raise
            log.info("switch superseded by a newer command")
            return
        except Exception as exc:
            if isinstance(exc, PagecastError) and exc.code is ErrorCode.PAGE_LOAD_FAILED:
                self._switch_failed(running, kept, wanted, exc.info)
                return
            await self._teardown(running)
            self._running = None
            self._fail(wanted, _as_error(exc, "switch"))
            return
        now = utcnow()
        self._set(started_at=now, ends_at=_ends_at(now, request.duration_s))
        self._schedule_expiry(wanted.session_id, request.duration_s)
        self._announce(wanted, previous, in_place=True)

    def _announce(self, wanted: _Wanted, previous: str | None, *, in_place: bool) -> None:
        """The event that says what the screen shows now and why."""
        request, session_id = wanted.request, wanted.session_id
        change = {"previous_session_id": previous, "url": request.url, "in_place": in_place}
        if wanted.reverting:
            self._emit(EventName.REVERTED, session_id, **change)
        elif request.resumed:
            self._emit(EventName.RESUMED, session_id, url=request.url, quality=request.quality)
        elif wanted.revert_to is not None:
            base = wanted.revert_to
            self._emit(
                EventName.INTERRUPTED,
                session_id,
                **change,
                revert_to=base.request.url,
                revert_session_id=base.session_id,
                ends_at=iso(_ends_at(utcnow(), request.duration_s)),
            )
        elif previous is not None:
            self._emit(EventName.REPLACED, session_id, **change)
        else:
            self._emit(EventName.STARTED, session_id, url=request.url, quality=request.quality)

    def _switch_failed(
        self, running: _Running, kept: _Kept, failed: _Wanted, error: ErrorInfo
    ) -> None:
        """The page did not load and the session shows the previous one again (see
        StreamSession.switch): the stream, its URL and the Cast session stay; the previous
        wish stands again, and status and event tell the command why it failed."""
        _bind(failed.session_id, failed.request).warning("switch failed: {}", error.message)
        previous = kept.wish
        running.session_id, running.request = previous.session_id, previous.request
        self._emit(
            EventName.FAILED,
            failed.session_id,
            url=failed.request.url,
            error=error.to_dict(),
            kept_session_id=previous.session_id,
        )
        if self._wanted is not failed:
            return  # a newer command decides what is shown next
        self._wanted = previous
        self._wish_changed()
        self._set(
            session_id=previous.session_id,
            url=previous.request.url,
            title=kept.title,
            error=error,
            **_wish_fields(previous),
        )
        if previous.ends_at is not None:
            left_s = (previous.ends_at - utcnow()).total_seconds()
            self._schedule_expiry(previous.session_id, max(left_s, 0.0))
        base = failed.revert_to
        if base is not None and base.session_id != previous.session_id:
            self._revert(base)  # a failed interrupt of an interrupt: back to the first base

    async def _in_flight(self, work: Callable[[], Awaitable[None]]) -> None:
        """Run stream work as a task that a newer command may cancel (see _kick)."""

        async def run() -> None:
            # The coroutine is made inside the task: cancelled before its first step, the
            # session's work then never begins instead of being left un-awaited.
            await work()

        task = asyncio.create_task(run())
        self._work = task
        try:
            await task
        finally:
            self._work = None
        reraise_lost_cancel()

    async def _stop_running(
        self,
        running: _Running,
        reason: _StopReason,
        *,
        quiet: bool = False,
        successor: StreamRequest | None = None,
    ) -> None:
        log = _bind(running.session_id, running.request)
        self._cancel_expiry()
        was_streaming = running.streaming
        self._set(state=State.STOPPING)
        log.info("stopping stream ({})", reason.reason)
        await self._teardown(running, successor)
        self._running = None
        if quiet:
            return
        if reason.error is not None:
            self._clear_error = False
            self._set(state=State.ERROR, error=reason.error, player_state=None, reason=None)
            self._emit(
                EventName.FAILED,
                running.session_id,
                error=reason.error.to_dict(),
                reason=reason.reason,
            )
            self._stop_reason = _StopReason(EventName.STOPPED, "command")
            return
        self._set_idle()
        if was_streaming or reason.event is not EventName.FINISHED:
            self._emit(reason.event, running.session_id, reason=reason.reason)

    async def _teardown(self, running: _Running, successor: StreamRequest | None = None) -> None:
        try:
            timeout = self._stop_timeout_s
            if self._deadline is not None:
                left = self._deadline - asyncio.get_running_loop().time()
                timeout = max(0.0, min(timeout, left))
            await _within(timeout, running.session.stop(successor, self._deadline))
            reraise_lost_cancel()
        except asyncio.CancelledError:
            if being_cancelled():
                raise
        except Exception:
            _bind(running.session_id, running.request).exception("session did not stop cleanly")

    def _fail(self, wanted: _Wanted, error: ErrorInfo) -> None:
        _bind(wanted.session_id, wanted.request).warning("stream failed: {}", error.message)
        self._cancel_expiry()
        self._clear_error = False
        self._set(state=State.ERROR, error=error, player_state=None, reason=None)
        self._emit(
            EventName.FAILED, wanted.session_id, url=wanted.request.url, error=error.to_dict()
        )
        if self._wanted is wanted and not (wanted.revert_to and self._revert(wanted.revert_to)):
            # The failed wish is spent: a broker redelivery or restart must not retry it.
            # (A failed interrupt instead gives the screen back to what it interrupted.)
            self._wanted = None
            self._wish_changed()
            self._stop_reason = _StopReason(EventName.STOPPED, "command")

    def _set_idle(self) -> None:
        request_id = self._status.request_id
        self._status = Status()
        if self._fault is not None:
            self._set(state=State.ERROR, error=self._fault, request_id=request_id)
        else:
            self._set(request_id=request_id)

    # -- durations -----------------------------------------------------------------------------

    def _schedule_expiry(self, session_id: str, duration_s: float | None) -> None:
        self._cancel_expiry()
        if duration_s is not None:
            loop = asyncio.get_running_loop()
            self._expiry = loop.call_later(duration_s, self._expire, session_id)
            ends = _ends_at(utcnow(), duration_s)
            if self._status.session_id == session_id and self._status.state in _ON_AIR:
                self._set(ends_at=ends)
            wanted = self._wanted
            if wanted is not None and wanted.session_id == session_id:
                # The clock runs from when the stream came up, not from when it was asked for.
                wanted.ends_at = ends
                self._wish_changed()

    def _cancel_expiry(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None

    def _expire(self, session_id: str) -> None:
        self._expiry = None
        wanted = self._wanted
        if wanted is None or wanted.session_id != session_id:
            return
        if wanted.revert_to is None or not self._revert(wanted.revert_to):
            self._want_nothing(_StopReason(EventName.FINISHED, "duration"))

    def _revert(self, base: Wish) -> bool:
        """Put the interrupted wish back (in place when the session can); False when there is
        nothing to go back to because the base's own duration ran out meanwhile."""
        request = interrupts.returning(base, utcnow())
        if request is None:
            return False
        self._wanted = _Wanted(base.session_id, request, base.ends_at, reverting=True)
        self._wish_changed()
        self._kick()
        return True

    # -- reports from the running session ------------------------------------------------------

    def _session_ended(self, session_id: str, error: PagecastError | None, reason: str) -> None:
        if self._wanted is None or self._wanted.session_id != session_id:
            return  # a newer command already decides what happens next
        info = error.info if error is not None else None
        self._want_nothing(_StopReason(EventName.STOPPED, reason, info))

    # -- publishing ----------------------------------------------------------------------------

    def _set(self, **changes: Any) -> None:
        self._status = self._status.evolve(**changes)
        self.status_changes.publish(self._status)

    def _emit(self, name: EventName, session_id: str | None, **data: Any) -> None:
        self.events.publish(Event(name, session_id, data))

    def _wish_changed(self) -> None:
        self.wish_changes.publish(self.wish)

    def _set_waiting(self, running: _Running, reason: str | None) -> None:
        if running.waiting == reason:
            return
        running.waiting = reason
        if running.streaming:
            self._set(state=State.WAITING if reason else State.STREAMING, reason=reason)


class _Listener:
    """A session's line back to the supervisor; reports from a session no longer running are
    dropped, so a slow teardown can never overwrite the status of its successor."""

    def __init__(self, supervisor: Supervisor) -> None:
        self._supervisor = supervisor
        self.running: _Running | None = None

    def _live(self) -> _Running | None:
        running = self.running
        return running if running is not None and running is self._supervisor._running else None

    def set_stream_url(self, stream_url: str) -> None:
        if self._live():
            self._supervisor._set(stream_url=stream_url)

    def set_title(self, title: str | None) -> None:
        if self._live():
            self._supervisor._set(title=title)

    def set_player(self, *, player_state: str | None, device: str | None) -> None:
        if self._live():
            status = self._supervisor.status
            device = device or status.device
            if (status.player_state, status.device) != (player_state, device):
                self._supervisor._set(player_state=player_state, device=device)

    def set_page(self, index: int, url: str) -> None:
        if self._live():
            self._supervisor._set(index=index, url=url)

    def set_volume(self, level: float | None, muted: bool | None) -> None:
        status = self._supervisor.status
        if self._live() and (status.volume, status.muted) != (level, muted):
            self._supervisor._set(volume=level, muted=muted)

    def set_waiting(self, reason: str | None) -> None:
        running = self._live()
        if running is not None:
            self._supervisor._set_waiting(running, reason)

    def event(self, name: EventName, **data: Any) -> None:
        running = self._live()
        if running is not None:
            self._supervisor._emit(name, running.session_id, **data)

    def ended(self, error: PagecastError | None, reason: str) -> None:
        running = self._live()
        if running is not None:
            self._supervisor._session_ended(running.session_id, error, reason)


def _wish_fields(wanted: _Wanted) -> dict[str, Any]:
    """Status fields that follow from the wish: its scene, rotation and way back."""
    request = wanted.request
    return {
        "scene": request.scene,
        **interrupts.rotation_fields(request),
        "index": 0 if request.pages else None,
        "revert_to": interrupts.describe(wanted.revert_to),
    }


def _bind(session_id: str, request: StreamRequest) -> Any:
    return logger.bind(session_id=session_id, url=request.url, quality=request.quality)


async def _within(seconds: float, work: Awaitable[None]) -> None:
    # asyncio.timeout rather than wait_for: on 3.11 wait_for may swallow an outer cancel.
    async with asyncio.timeout(seconds):
        await work


def _as_error(exc: BaseException, what: str) -> ErrorInfo:
    if isinstance(exc, PagecastError):
        return exc.info
    if isinstance(exc, TimeoutError):
        return ErrorInfo(ErrorCode.INTERNAL, f"{what} did not finish in time")
    logger.opt(exception=exc).error("unexpected error during {}", what)
    return ErrorInfo(ErrorCode.INTERNAL, f"{what} failed: {exc.__class__.__name__}: {exc}")


def _ends_at(start: datetime, duration_s: float | None) -> datetime | None:
    return start + timedelta(seconds=duration_s) if duration_s is not None else None
