"""What a stream session needs from casting, independent of pychromecast.

A device reports facts (what it shows, whether it is reachable) and offers actions; what to do
about the facts (recast, wait, step aside) is decided above it, in agent/stream/casting.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from agent.broadcast import Broadcast

# The receiver's idle screen (pychromecast's IDLE_APP_ID): nothing is cast.
BACKDROP_APP_ID = "E8C28D3C"
# The Default Media Receiver our stream plays in (pychromecast's APP_MEDIA_RECEIVER).
MEDIA_RECEIVER_APP_ID = "CC1AD845"


@dataclass(frozen=True, slots=True)
class DeviceFacts:
    """One snapshot of what a device reports; every field as the device says it."""

    connected: bool = False
    app_id: str | None = None
    # Backdrop or no app at all: nobody casts anything.
    idle_screen: bool = False
    # Our media receiver playing (or trying to play) the stream we last showed.
    ours: bool = False
    player_state: str | None = None
    idle_reason: str | None = None
    content_id: str | None = None
    media_session_id: int | None = None
    volume: float | None = None
    muted: bool | None = None


class CastDevice(Protocol):
    """A resolved Cast device, kept across sessions (its connection heals by itself)."""

    @property
    def name(self) -> str:
        """Friendly name as the device reports it."""

    @property
    def host(self) -> str:
        """IP address the device is reached at (decides which local address serves the stream)."""

    @property
    def facts(self) -> DeviceFacts:
        """What the device reports right now."""

    @property
    def facts_changes(self) -> Broadcast[DeviceFacts]:
        """Every change of ``facts``, in order."""

    async def show(self, stream_url: str, title: str) -> None:
        """Launch the media receiver, LOAD ``stream_url`` as LIVE HLS and wait for PLAYING.

        Raises PagecastError: CAST_FAILED (with the device's code), DEVICE_UNREACHABLE.
        """

    async def stop(self, deadline: float | None = None) -> None:
        """Quit our app (or stop our media, as configured) if it is still ours on screen.

        ``deadline`` (event loop time) bounds the request; None: the default request timeout.
        Never raises for a device that does not answer. Idempotent.
        """

    async def release(self) -> None:
        """Leave the receiver as it is for the next show(); a stop() before that show still
        closes what we left on screen."""

    async def set_volume(self, level: float | None, muted: bool | None) -> None:
        """Set the device's volume (0..1) and/or mute; None leaves that part as it is.

        Raises PagecastError DEVICE_UNREACHABLE or CAST_FAILED.
        """

    async def wait_connected(self, within_s: float) -> bool:
        """Whether the device is (or gets) connected within ``within_s`` seconds."""

    async def reconnect(self) -> None:
        """A fresh connection attempt now: pychromecast's own retry delay doubles up to 5
        minutes while a device is away, too slow to notice one that is back."""


class CastManager(Protocol):
    async def resolve(self, spec: str | None) -> CastDevice | None:
        """The device for ``spec`` (a start command's ``device`` or None for the configured one).

        None means stream-only: ``none``, or nothing configured and no device in sight.
        Raises DEVICE_NOT_FOUND / DEVICE_UNREACHABLE.
        """
