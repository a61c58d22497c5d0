"""One ``waiting`` reason from several parts of a session.

The Cast side (device away, taken over) and the page side (page unreachable) each say when the
screen does not show the wish and when it does again. Both can hold at once: a page that comes
back while the TV is still off must not report "showing again". Each part gets its own view of
the session listener; the supervisor hears the most telling reason still held, and None only
when no part holds one.
"""

from __future__ import annotations

from typing import Any

from agent.errors import PagecastError
from agent.supervisor.session import SessionListener
from agent.supervisor.state import EventName

# Most telling first: with the device away, an unreachable page is not what keeps it dark.
_PRIORITY = ("device_away", "taken_over", "page_unreachable")


class WaitingReasons:
    def __init__(self, listener: SessionListener) -> None:
        self._listener = listener
        self._held: dict[str, str] = {}
        self._reported: str | None = None

    def part(self, name: str) -> SessionListener:
        """The listener that part ``name`` reports to."""
        return _PartListener(self, name)

    def _set(self, part: str, reason: str | None) -> None:
        if reason is None:
            self._held.pop(part, None)
        else:
            self._held[part] = reason
        held = sorted(
            self._held.values(),
            key=lambda r: _PRIORITY.index(r) if r in _PRIORITY else len(_PRIORITY),
        )
        reason = held[0] if held else None
        if reason != self._reported:
            self._reported = reason
            self._listener.set_waiting(reason)


class _PartListener:
    """A SessionListener passing everything on, except that waiting reasons are combined."""

    def __init__(self, reasons: WaitingReasons, part: str) -> None:
        self._reasons = reasons
        self._part = part
        self._listener = reasons._listener

    def set_stream_url(self, stream_url: str) -> None:
        self._listener.set_stream_url(stream_url)

    def set_title(self, title: str | None) -> None:
        self._listener.set_title(title)

    def set_player(self, *, player_state: str | None, device: str | None) -> None:
        self._listener.set_player(player_state=player_state, device=device)

    def set_page(self, index: int, url: str) -> None:
        self._listener.set_page(index, url)

    def set_volume(self, level: float | None, muted: bool | None) -> None:
        self._listener.set_volume(level, muted)

    def set_waiting(self, reason: str | None) -> None:
        self._reasons._set(self._part, reason)

    def event(self, name: EventName, **data: Any) -> None:
        self._listener.event(name, **data)

    def ended(self, error: PagecastError | None, reason: str) -> None:
        self._listener.ended(error, reason)
