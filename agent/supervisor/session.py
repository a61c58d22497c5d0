"""The contract between the supervisor and whatever actually streams.

The supervisor owns *when* things happen (one slot, latest command wins, durations); a
session owns *how* a page becomes video on a screen. The shipped implementation is the media
pipeline plus casting; the supervisor's race tests drive a controllable double.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from agent.errors import PagecastError
from agent.supervisor.state import EventName, StreamFigures


@dataclass(frozen=True, slots=True)
class RotationPage:
    """One page of a rotation; ``seconds`` None: the rotation's ``rotate_s``."""

    url: str
    seconds: float | None = None


@dataclass(frozen=True, slots=True)
class StreamRequest:
    """A validated start command."""

    url: str
    quality: str
    device: str | None = None  # None: the configured cast.device
    auth: str | None = None
    duration_s: float | None = None
    force: bool = False
    request_id: str | None = None
    # From the persisted wish after a restart, not from a command: nobody waits for an answer,
    # so an unreachable page or device is waited for instead of failing the start.
    resumed: bool = False
    # A rotation: these pages take turns in one stream (``url`` is the first). Empty: one page.
    pages: tuple[RotationPage, ...] = ()
    rotate_s: float | None = None
    # An interrupt: when ``duration_s`` ends, what was on before comes back.
    revert: bool = False
    # The configured scene this request was made from, if any (shown in status).
    scene: str | None = None

    def same_stream(self, other: StreamRequest) -> bool:
        """True when ``other`` would put exactly the same thing on the same screen."""
        return self._screen() == other._screen()

    def _screen(self) -> tuple[object, ...]:
        return (self.url, self.quality, self.device, self.auth, self.pages, self.rotate_s)

    def page_seconds(self, index: int) -> float:
        """How long page ``index`` of the rotation stays on screen."""
        seconds = self.pages[index].seconds
        return seconds if seconds is not None else self.rotate_s or 0.0


class SessionListener(Protocol):
    """How a running session reports to the supervisor. Call from the event loop only."""

    def set_stream_url(self, stream_url: str) -> None: ...

    def set_title(self, title: str | None) -> None: ...

    def set_player(self, *, player_state: str | None, device: str | None) -> None:
        """What the Cast device reports: its player state and its friendly name."""

    def set_waiting(self, reason: str | None) -> None:
        """The wish stands but the screen does not show it: ``device_away``, ``taken_over``,
        ``page_unreachable``; None once it shows the stream again."""

    def set_page(self, index: int, url: str) -> None:
        """A rotation now shows its page ``index`` (``url``)."""

    def set_volume(self, level: float | None, muted: bool | None) -> None:
        """The Cast device's volume as it reports it (also when changed elsewhere)."""

    def event(self, name: EventName, **data: Any) -> None:
        """A lifecycle event the session caused by itself (``device_lost``, ``recovered``)."""

    def ended(self, error: PagecastError | None, reason: str) -> None:
        """The session cannot go on (retries exhausted, taken over); the supervisor stops it.

        ``error`` None means a clean end (e.g. another sender took the screen and we respect it).
        """


class StreamSession(Protocol):
    async def start(self) -> None:
        """Bring the stream up and on screen; return once the device plays it.

        Raises PagecastError. May be cancelled at any await; the supervisor then calls stop().
        """

    def can_switch(self, request: StreamRequest) -> bool:
        """Whether ``request`` can be served by navigating this session in place."""

    async def switch(self, session_id: str, request: StreamRequest) -> None:
        """Show ``request.url`` without restarting the encoder or the Cast media session.

        PAGE_LOAD_FAILED means the page did not load and the session went back to the page
        it showed before: it keeps serving the previous request. Any other error: broken.
        """

    def reload(self) -> None:
        """Load the page on screen again, in place; runs in the background (trouble is
        reported as ``page_error``)."""

    def next_page(self) -> bool:
        """A rotation shows its next page now; False when this session does not rotate."""

    async def set_volume(self, level: float | None, muted: bool | None) -> None:
        """Set the Cast device's volume and/or mute; raises PagecastError (DEVICE_NOT_FOUND
        when the session casts to no device)."""

    async def stop(
        self, successor: StreamRequest | None = None, deadline: float | None = None
    ) -> None:
        """Tear everything down; idempotent, safe after a failed or cancelled start.

        ``successor`` is the request replacing this session, if any: a session casting to the
        same device leaves the receiver running for it instead of sending the TV back to its
        ambient screen between the two streams. ``deadline`` (event loop time) is when the
        agent must be gone: requests to the device are given only what is left of it.
        """

    def figures(self) -> StreamFigures | None:
        """Current encoder figures for the heartbeat, None when not encoding."""


class SessionFactory(Protocol):
    def __call__(
        self, session_id: str, request: StreamRequest, listener: SessionListener
    ) -> StreamSession: ...
