"""Bringing the stream backend up while the agent is already reachable on MQTT.

A backend that cannot start (Playwright's driver crashing on a missing library, Chromium not
launching, the HTTP port taken) must not end the agent before anyone can see why: the agent
comes online all the same, its status is ``error`` with a code and one line saying what is
wrong, and it keeps trying with backoff until the cause is fixed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from loguru import logger

from agent.errors import ErrorCode, ErrorInfo, PagecastError
from agent.retry import Backoff
from agent.stream.backend import FaultReport, StreamBackend
from agent.supervisor.session import SessionListener, StreamRequest, StreamSession
from agent.supervisor.state import StreamFigures

RETRY_MIN_S = 1.0
RETRY_MAX_S = 60.0
_MESSAGE_LIMIT = 200
# What Playwright says when its Node.js driver dies at once; the reason went to stderr only.
_DRIVER_GONE = "Connection closed while reading from the driver"
_DRIVER_HINT = (
    "Playwright's driver (Node.js) exited at start-up; a missing system library such as "
    "libatomic1? Its own error is in the log"
)


def describe_fault(what: str, exc: BaseException) -> ErrorInfo:
    """One line for ``status.error``: Playwright's and Chromium's messages run to pages."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    first = lines[0] if lines else exc.__class__.__name__
    if first.startswith(_DRIVER_GONE):
        first = _DRIVER_HINT
    if len(first) > _MESSAGE_LIMIT:
        first = first[: _MESSAGE_LIMIT - 1] + "…"
    return ErrorInfo(ErrorCode.PIPELINE_FAILED, f"{what} cannot start: {first}")


class BackendKeeper:
    """Enters the backend (retrying), reports its faults, and makes sessions for it.

    Sessions asked for before the backend is up wait for it; a command's session fails at
    once with the fault while there is one, a resumed wish's waits on.
    """

    def __init__(self, make_backend: Callable[[FaultReport], StreamBackend]) -> None:
        self.backend = make_backend(self._browser_fault)
        # Where faults are shown (the supervisor's set_fault, made after this keeper).
        self.show_fault: Callable[[ErrorInfo | None], None] = lambda _fault: None
        self._fault: ErrorInfo | None = None
        self._entered = False
        self._changed = asyncio.Event()

    @property
    def fault(self) -> ErrorInfo | None:
        return self._fault

    def _browser_fault(self, exc: Exception | None) -> None:
        """The backend's report about warming the browser (StreamBackend ``on_fault``)."""
        self._report(describe_fault("the browser", exc) if exc is not None else None)

    def _report(self, fault: ErrorInfo | None) -> None:
        self._fault = fault
        self.show_fault(fault)
        self._changed.set()
        self._changed = asyncio.Event()

    async def run(self) -> None:
        """Enter the backend, retrying with backoff; returns once it is up."""
        backoff = Backoff(RETRY_MIN_S, RETRY_MAX_S)
        while True:
            try:
                await self.backend.__aenter__()
            except Exception as exc:
                fault = describe_fault("the stream backend", exc)
                delay = backoff.next()
                logger.error("{} (retry in {:.0f} s)", fault.message, delay)
                self._report(fault)
                await asyncio.sleep(delay)
                continue
            self._entered = True
            self._report(None)
            return

    async def close(self) -> None:
        if self._entered:
            self._entered = False
            await self.backend.__aexit__(None, None, None)

    async def ready(self, request: StreamRequest) -> None:
        """Until the backend is up; raises the fault meanwhile unless ``request`` is resumed."""
        while not self._entered:
            if self._fault is not None and not request.resumed:
                raise PagecastError(self._fault.code, self._fault.message)
            await self._changed.wait()

    def create_session(
        self, session_id: str, request: StreamRequest, listener: SessionListener
    ) -> StreamSession:
        if self._entered:
            return self.backend.create_session(session_id, request, listener)
        return _PendingSession(self, session_id, request, listener)


class _PendingSession:
    """A session asked for before the backend was up: waits for it, then is the real one."""

    def __init__(
        self,
        keeper: BackendKeeper,
        session_id: str,
        request: StreamRequest,
        listener: SessionListener,
    ) -> None:
        self._keeper = keeper
        self._args = (session_id, request, listener)
        self._inner: StreamSession | None = None

    async def start(self) -> None:
        await self._keeper.ready(self._args[1])
        self._inner = self._keeper.backend.create_session(*self._args)
        await self._inner.start()

    def can_switch(self, request: StreamRequest) -> bool:
        return self._inner is not None and self._inner.can_switch(request)

    async def switch(self, session_id: str, request: StreamRequest) -> None:
        if self._inner is None:
            raise PagecastError(ErrorCode.PIPELINE_FAILED, "the stream backend is not up")
        await self._inner.switch(session_id, request)

    def reload(self) -> None:
        if self._inner is not None:
            self._inner.reload()

    def next_page(self) -> bool:
        return self._inner is not None and self._inner.next_page()

    async def set_volume(self, level: float | None, muted: bool | None) -> None:
        if self._inner is None:
            raise PagecastError(ErrorCode.DEVICE_NOT_FOUND, "the stream backend is not up")
        await self._inner.set_volume(level, muted)

    async def stop(
        self, successor: StreamRequest | None = None, deadline: float | None = None
    ) -> None:
        if self._inner is not None:
            await self._inner.stop(successor, deadline)

    def figures(self) -> StreamFigures | None:
        return self._inner.figures() if self._inner is not None else None
